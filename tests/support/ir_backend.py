"""A custom backend on the IR path (translates=True) whose answers a test scripts as IR
events, and which records every IR request it receives — for testing client dialects
(Messages, Responses) independently of any provider's wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from chromagent_proxy import DefaultBackendRegistry
from chromagent_proxy.backends.base import BackendProvider, RequestContext
from chromagent_proxy.core import ir

Script = Callable[[ir.Request], list[list[ir.Event]]]


def text_answer(text: str, usage: ir.Usage | None = None) -> Script:
    def script(req: ir.Request) -> list[list[ir.Event]]:
        words = text.split(" ")
        batches: list[list[ir.Event]] = [[ir.Start(model=req.model)]]
        for i, w in enumerate(words):
            batches.append([ir.TextDelta(w if i == 0 else " " + w)])
        batches.append([ir.Finish("stop"), usage or ir.Usage(input=10, output=len(words))])
        return batches

    return script


class ScriptedIR(BackendProvider):
    type: ClassVar[str] = "scripted-ir"
    translates: ClassVar[bool] = True
    dialect: ClassVar[str] = "scripted"

    # Shared by instances of one test (set by the test before requests).
    script: ClassVar[Script] = text_answer("hello from the IR backend")
    received: ClassVar[list[ir.Request]] = []

    def supports_tools(self) -> bool:
        return True

    def supports_images(self) -> bool:
        return True

    async def embed(self, request: ir.EmbedRequest, ctx: RequestContext) -> ir.EmbedResult:
        # The custom-backend embeddings contract: vectors in input order, and a token count.
        return ir.EmbedResult([[float(len(t)), 1.0] for t in request.inputs], len(request.inputs))

    async def generate(self, request: ir.Request, ctx: RequestContext) -> list[ir.Event]:
        type(self).received.append(request)
        return [ev for batch in type(self).script(request) for ev in batch]

    async def generate_stream(
        self, request: ir.Request, ctx: RequestContext
    ) -> AsyncIterator[list[ir.Event]]:
        type(self).received.append(request)
        for batch in type(self).script(request):
            yield batch


def registry() -> DefaultBackendRegistry:
    reg = DefaultBackendRegistry()
    reg.register("scripted-ir", ScriptedIR)
    return reg


def config(**extra: Any) -> dict[str, Any]:
    return {
        "backends": [{"id": "ir", "type": "scripted-ir", "modelMapping": {"m": "up-m"}}],
        **extra,
    }
