"""Ollama embeddings: ``POST {baseUrl}/api/embed`` ``{model, input: [..], dimensions?}`` →
``{embeddings: [[..]], prompt_eval_count}``."""

from __future__ import annotations

from typing import Any

import msgspec

from chromagent_proxy.backends.base import BackendRuntime, context_headers
from chromagent_proxy.backends.embed import in_batches
from chromagent_proxy.backends.upstream import ErrorParser, open_response
from chromagent_proxy.backends.upstream_read import DEFAULT_BODY_LIMIT, read_capped
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.errors import UpstreamProtocolError

BATCH = 256  # inputs per upstream request (Ollama has no hard limit; keeps bodies sane)


class _EmbedResponse(msgspec.Struct):
    embeddings: list[list[float]]
    prompt_eval_count: int | None = None


_decode = codec.decoder(_EmbedResponse).decode


async def embed(
    runtime: BackendRuntime,
    backend_id: str,
    url: str,
    headers: dict[str, str],
    request: ir.EmbedRequest,
    keep_alive: Any,
    error_parser: ErrorParser,
    hint: str,
) -> ir.EmbedResult:
    async def one(chunk: list[str]) -> ir.EmbedResult:
        body: dict[str, Any] = {"model": request.model, "input": chunk}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        async with open_response(
            runtime,
            backend_id,
            url,
            headers,
            codec.dumps(body),
            error_parser=error_parser,
            hint=hint,
            extra_headers=context_headers(),
        ) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, backend_id)
        try:
            parsed = _decode(data)
        except (codec.DecodeError, codec.ValidationError) as exc:
            raise UpstreamProtocolError(
                f"backend '{backend_id}' sent an embed answer this gateway cannot read: {exc}"
            ) from None
        return ir.EmbedResult(parsed.embeddings, parsed.prompt_eval_count)

    return await in_batches(request.inputs, BATCH, one)
