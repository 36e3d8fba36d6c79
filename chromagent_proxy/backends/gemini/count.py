"""Gemini ``countTokens`` for ``POST /v1/messages/count_tokens`` (dialects/messages/count.py
calls the provider's ``count_tokens``). The request is built exactly as for generation, so
the count covers the same contents, system instruction and (cleaned) tools.

Gemini API: ``{prefix}{model}:countTokens`` with ``{"generateContentRequest": {model, …}}``;
Vertex AI: the same verb with ``contents`` / ``systemInstruction`` / ``tools`` at the top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chromagent_proxy.backends.base import RequestContext
from chromagent_proxy.backends.gemini.request import build_body
from chromagent_proxy.backends.upstream import ERROR_BODY_LIMIT
from chromagent_proxy.backends.upstream_read import read_capped
from chromagent_proxy.backends.vertex import post
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.errors import UpstreamProtocolError
from chromagent_proxy.media.inline import inline_images

if TYPE_CHECKING:
    from chromagent_proxy.backends.gemini.provider import GeminiBackend

_COUNTED = ("contents", "systemInstruction", "tools")


async def count_tokens(
    provider: GeminiBackend, request: ir.Request, ctx: RequestContext, parser: Any
) -> int:
    assert provider.runtime is not None and provider.config is not None
    await inline_images(request, provider.runtime.images)
    body = build_body(request, default_max_tokens=None)
    model = request.model.removeprefix("models/")
    counted = {k: body[k] for k in _COUNTED if k in body}
    payload = (
        counted
        if provider.config.project_id
        else {"generateContentRequest": {"model": f"models/{model}", **counted}}
    )
    url = provider._prefix + quote(model, safe="-_.@") + ":countTokens"
    async with post(
        provider.runtime,
        ctx.backend_id,
        url,
        provider._headers,
        codec.dumps(payload),
        provider._auth,
        parser,
    ) as resp:
        data = await read_capped(resp, ERROR_BODY_LIMIT, ctx.backend_id)
    try:
        total = codec.loads(data).get("totalTokens")
    except (ValueError, AttributeError):
        total = None
    if not isinstance(total, int):
        raise UpstreamProtocolError(
            f"backend '{ctx.backend_id}' answered countTokens without totalTokens"
        )
    return total
