"""Custom backends that implement only the Chat Completions contract, for clients of the
other dialects (Messages, Responses): not available until the IR ↔ Chat Completions
translator lands (backends/openai_chat.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..core import ir
from ..errors import UnsupportedFeature
from .base import BackendProvider, RequestContext


async def legacy_generate(
    provider: BackendProvider, request: ir.Request, ctx: RequestContext
) -> list[ir.Event]:
    raise UnsupportedFeature(
        f"backend '{ctx.backend_id}' speaks only Chat Completions; use /v1/chat/completions"
    )


async def legacy_generate_stream(
    provider: BackendProvider, request: ir.Request, ctx: RequestContext
) -> AsyncIterator[list[ir.Event]]:
    raise UnsupportedFeature(
        f"backend '{ctx.backend_id}' speaks only Chat Completions; use /v1/chat/completions"
    )
    yield []
