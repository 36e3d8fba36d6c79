"""Gemini embeddings for ``POST /v1/embeddings``.

- Gemini API (no ``projectId``): ``{prefix}{model}:batchEmbedContents`` with
  ``{"requests": [{"model": "models/{m}", "content": {"parts": [{"text"}]},
  "outputDimensionality"?}]}`` → ``{"embeddings": [{"values"}]}`` in request order
  (100 requests per call).
- Vertex AI: ``{prefix}{model}:predict`` with ``{"instances": [{"content"}],
  "parameters": {"outputDimensionality"?}}`` → ``predictions[].embeddings.{values,
  statistics.token_count}`` (250 instances per call; ``gemini-embedding-001`` takes one
  instance per call, reference/providers.md §5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from chromagent_proxy.backends.base import RequestContext
from chromagent_proxy.backends.embed import in_batches
from chromagent_proxy.backends.upstream_read import DEFAULT_BODY_LIMIT, read_capped
from chromagent_proxy.backends.vertex import post
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.errors import UpstreamProtocolError

if TYPE_CHECKING:
    from chromagent_proxy.backends.gemini.provider import GeminiBackend

API_BATCH = 100
VERTEX_BATCH = 250


async def embed(
    provider: GeminiBackend, request: ir.EmbedRequest, ctx: RequestContext, parser: Any
) -> ir.EmbedResult:
    assert provider.runtime is not None and provider.config is not None
    runtime = provider.runtime
    model = request.model.removeprefix("models/")
    vertex = bool(provider.config.project_id)
    verb = ":predict" if vertex else ":batchEmbedContents"
    url = provider._prefix + quote(model, safe="-_.@") + verb

    async def one(chunk: list[str]) -> ir.EmbedResult:
        if vertex:
            payload: dict[str, Any] = {"instances": [{"content": t} for t in chunk]}
            if request.dimensions is not None:
                payload["parameters"] = {"outputDimensionality": request.dimensions}
        else:
            item: dict[str, Any] = {"model": f"models/{model}"}
            if request.dimensions is not None:
                item["outputDimensionality"] = request.dimensions
            payload = {"requests": [{**item, "content": {"parts": [{"text": t}]}} for t in chunk]}
        async with post(
            runtime,
            ctx.backend_id,
            url,
            provider._headers,
            codec.dumps(payload),
            provider._auth,
            parser,
        ) as resp:
            data = await read_capped(resp, DEFAULT_BODY_LIMIT, ctx.backend_id)
        return _result(data, vertex, ctx.backend_id)

    size = (
        1
        if vertex and model.startswith("gemini-embedding-001")
        else (VERTEX_BATCH if vertex else API_BATCH)
    )
    return await in_batches(request.inputs, size, one)


def _result(data: bytes, vertex: bool, backend_id: str) -> ir.EmbedResult:
    try:
        body = codec.loads(data)
        if vertex:
            preds = body["predictions"]
            vectors = [p["embeddings"]["values"] for p in preds]
            counts = [p["embeddings"].get("statistics", {}).get("token_count") for p in preds]
            tokens = (
                int(sum(counts))
                if counts and all(isinstance(c, int | float) for c in counts)
                else None
            )
            return ir.EmbedResult(vectors, tokens)
        return ir.EmbedResult([e["values"] for e in body["embeddings"]], None)
    except (ValueError, KeyError, TypeError):
        raise UpstreamProtocolError(
            f"backend '{backend_id}' sent an embeddings answer this gateway cannot read"
        ) from None
