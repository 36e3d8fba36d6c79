"""``/v1/embeddings`` (OpenAI's shape): relayed as bytes to OpenAI-compatible backends,
answered through each backend's ``embed`` elsewhere, with ``encoding_format: base64``
produced by the gateway (little-endian float32) when the upstream returns floats."""

from __future__ import annotations

import array
import base64
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.errors import GatewayError, InvalidRequest, UnsupportedFeature
from chromagent_proxy.core.rawjson import with_model
from chromagent_proxy.dialects.base import DirectDialect, Inbound, decode_body
from chromagent_proxy.dialects.routed import RoutedDecoder

if TYPE_CHECKING:  # a runtime import would point upward
    from chromagent_proxy.backends.base import BackendProvider, RequestContext

MAX_INPUTS = 2048  # OpenAI's own limit per request


class EmbeddingsRequest(msgspec.Struct):
    model: str
    # str, list of str, list of token ids, or list of token-id lists (checked in parse)
    input: str | list[Any]
    encoding_format: str = "float"
    dimensions: int | None = None
    user: str | None = None


_decode = RoutedDecoder(EmbeddingsRequest)
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')


def _floats_b64(vector: list[float]) -> str:
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


class EmbeddingsDialect(DirectDialect):
    name: ClassVar[str] = "embeddings"

    def parse(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> Inbound:
        req = decode_body(_decode, body)
        if req.encoding_format not in ("float", "base64"):
            raise InvalidRequest(
                "encoding_format must be 'float' or 'base64'", param="encoding_format"
            )
        if req.dimensions is not None and req.dimensions < 1:
            raise InvalidRequest("dimensions must be at least 1", param="dimensions")
        inputs = req.input
        count = (
            1 if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)) else len(inputs)
        )
        if count == 0 or inputs == "":
            raise InvalidRequest("'input' must not be empty", param="input")
        if count > MAX_INPUTS:
            raise InvalidRequest(f"'input' has more than {MAX_INPUTS} items", param="input")
        return Inbound(req.model, False, False, False, body, req)

    # -- native: OpenAI-compatible upstreams take the body as it is

    def relays(self, provider: BackendProvider) -> bool:
        return "embeddings" in provider.native_dialects

    async def relay(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> tuple[bytes, ir.Usage | None]:
        body = with_model(inbound.body, inbound.model, ctx.upstream_model)
        payload: bytes = await provider.post_native("embeddings", body)  # type: ignore[attr-defined]
        m = _PROMPT.search(payload, max(0, payload.rfind(b'"usage"')))
        return payload, ir.Usage(input=int(m.group(1))) if m else None

    # -- every other backend: its own embed()

    async def answer(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> tuple[bytes, ir.Usage | None]:
        req: EmbeddingsRequest = inbound.native
        raw = req.input
        if isinstance(raw, str):
            texts = [raw]
        elif all(isinstance(x, str) for x in raw):
            texts = list(raw)
        else:
            raise UnsupportedFeature(
                f"backend '{ctx.backend_id}' embeds text only; token-id inputs work with "
                "OpenAI-compatible backends",
                param="input",
            )
        result = await provider.embed(
            ir.EmbedRequest(ctx.upstream_model, texts, req.dimensions, req.user), ctx
        )
        if len(result.vectors) != len(texts):
            raise GatewayError(
                f"backend '{ctx.backend_id}' returned {len(result.vectors)} embeddings for "
                f"{len(texts)} inputs",
                status=502,
                type="api_error",
                code="upstream_protocol_error",
            )
        b64 = req.encoding_format == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _floats_b64(v) if b64 else v,
            }
            for i, v in enumerate(result.vectors)
        ]
        tokens = result.prompt_tokens or 0
        body = codec.dumps(
            {
                "object": "list",
                "data": data,
                "model": inbound.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )
        return body, ir.Usage(input=tokens) if result.prompt_tokens is not None else None

    def error_body(self, err: GatewayError) -> tuple[int, bytes, dict[str, str]]:
        return err.status, err.body(), {}


EMBEDDINGS = EmbeddingsDialect()
