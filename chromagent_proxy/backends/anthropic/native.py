"""The native Messages path: a Messages client's body to an anthropic / vertex-anthropic
upstream with only what must change (DESIGN.md §9 "same dialect, no IR").

- ``model`` becomes the upstream name (routing's modelMapping: only the value's bytes,
  rawjson.py); on Vertex it leaves the body (it is in the URL) and
  ``anthropic_version: vertex-2023-10-16`` joins it;
- thinking blocks whose signature the gateway made (``cgs1_`` prefix, for a turn another
  backend answered) are removed: Anthropic rejects signatures it did not issue;
- every other byte is the client's (cache_control, signed thinking, fields the gateway does
  not know). The body is only re-encoded when one of the above applies.

Headers: the client's ``anthropic-version`` (else 2023-06-01; Vertex takes the body field)
and its ``anthropic-beta`` values filtered by the backend's ``anthropicBetas``: default all
on ``anthropic``, ``VERTEX_BETAS`` on ``vertex-anthropic`` (Vertex answers 400 "Unexpected
value(s) … for the anthropic-beta header" to betas it does not know, and Claude Code sends
new ones with most releases). ``count_tokens`` on Vertex goes without betas at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDictProxy

from chromagent_proxy.backends.anthropic.errors import http_error
from chromagent_proxy.backends.base import context_headers
from chromagent_proxy.backends.upstream import ERROR_BODY_LIMIT, open_response
from chromagent_proxy.backends.upstream_read import UpstreamResponse, read_capped
from chromagent_proxy.core import codec
from chromagent_proxy.core.body import Body
from chromagent_proxy.core.errors import GatewayError, UpstreamHTTPError
from chromagent_proxy.core.rawjson import with_model

if TYPE_CHECKING:
    from chromagent_proxy.backends.anthropic.provider import AnthropicBackend

VERTEX_VERSION = "vertex-2023-10-16"
# Betas Claude on Vertex accepts (documented in the README); others are dropped.
VERTEX_BETAS = frozenset(
    {
        "interleaved-thinking-2025-05-14",
        "context-management-2025-06-27",
        "context-1m-2025-08-07",
        "fine-grained-tool-streaming-2025-05-14",
        "token-efficient-tools-2025-02-19",
        "output-128k-2025-02-19",
        "tool-examples-2025-10-29",
    }
)


def allowed_betas(provider: AnthropicBackend) -> frozenset[str] | None:
    """None: forward every value."""
    cfg = provider.config
    listed = cfg.anthropic_betas if cfg is not None else None
    if listed is None:
        return VERTEX_BETAS if provider.vertex else None
    return None if "*" in listed else frozenset(listed)


def beta_header(provider: AnthropicBackend, value: str | None) -> str | None:
    if not value:
        return None
    allowed = allowed_betas(provider)
    if allowed is None:
        return value
    kept = [b for b in (v.strip() for v in value.split(",")) if b in allowed]
    return ",".join(kept) or None


def _strip_gateway_thinking(data: dict[str, Any]) -> None:
    for msg in data.get("messages") or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            msg["content"] = [
                b
                for b in content
                if not (
                    isinstance(b, dict)
                    and b.get("type") == "thinking"
                    and str(b.get("signature") or "").startswith("cgs1_")
                )
            ]


def rewrite_body(
    provider: AnthropicBackend, body: bytes, client_model: str, model: str, gateway_thinking: bool
) -> Body:
    """The client's body with only what must change; ``gateway_thinking``: the parse found
    thinking blocks the gateway signed, which go (the upstream cannot read them)."""
    if not provider.vertex and not gateway_thinking:
        # Only the model's bytes change, sent as pieces when certain (rawjson.with_model).
        return with_model(body, client_model, model)
    data = codec.loads(body)
    if gateway_thinking:
        _strip_gateway_thinking(data)
    if provider.vertex:
        data.pop("model", None)
        data["anthropic_version"] = VERTEX_VERSION
    else:
        data["model"] = model
    return codec.dumps(data)


async def headers_for(
    provider: AnthropicBackend, client: Mapping[str, str], *, betas: bool = True
) -> dict[str, str]:
    """The backend's headers and credentials, the client's anthropic-version (not on
    Vertex: the body carries it) and the client's betas that pass the filter."""
    headers = dict(provider._headers)
    if provider.auth is not None:
        headers.update(await provider.auth.headers())
    if not provider.vertex:
        version = client.get("anthropic-version")
        if version:
            headers["anthropic-version"] = version
    if not betas:
        headers.pop("anthropic-beta", None)
        return headers
    # The backend's own additionalHeaders betas first, then the client's that pass the filter.
    values = [v.strip() for v in headers.get("anthropic-beta", "").split(",") if v.strip()]
    for v in (beta_header(provider, client.get("anthropic-beta")) or "").split(","):
        if v and v not in values:
            values.append(v)
    if values:
        headers["anthropic-beta"] = ",".join(values)
    return headers


class _Unauthorized(UpstreamHTTPError):
    """An upstream 401 on the native path: a cached Google token may be stale."""

    def __init__(self, mapped: GatewayError) -> None:
        super().__init__(mapped.message, status=mapped.status, type=mapped.type, code=mapped.code)
        self.mapped = mapped


def _parser(
    backend_id: str, status: int, body: bytes, headers: CIMultiDictProxy[str]
) -> GatewayError:
    err = http_error(backend_id, status, body, headers)
    return _Unauthorized(err) if status == 401 else err


async def open_native(
    provider: AnthropicBackend,
    stack: AsyncExitStack,
    url: str,
    body: Body,
    client: Mapping[str, str],
    *,
    betas: bool = True,
) -> UpstreamResponse:
    """POST and wait for a 2xx head (errors become GatewayErrors, Anthropic's envelope
    read); a stale Google token is refreshed once and the request sent again."""
    assert provider.runtime is not None and provider.config is not None
    runtime, bid = provider.runtime, provider.config.id
    headers = await headers_for(provider, client, betas=betas)
    try:
        return await stack.enter_async_context(
            open_response(
                runtime,
                bid,
                url,
                headers,
                body,
                error_parser=_parser,
                extra_headers=context_headers(),
            )
        )
    except _Unauthorized as exc:
        if provider.auth is None or not provider.auth.refreshable:
            raise exc.mapped from None
        await provider.auth.invalidate(headers.get("Authorization"))
    headers = await headers_for(provider, client, betas=betas)
    try:
        return await stack.enter_async_context(
            open_response(
                runtime,
                bid,
                url,
                headers,
                body,
                error_parser=_parser,
                extra_headers=context_headers(),
            )
        )
    except _Unauthorized as exc:
        raise exc.mapped from None


def count_url(provider: AnthropicBackend) -> str:
    if provider.vertex:
        return provider._url + "count-tokens:rawPredict"
    return provider._url + "/count_tokens"


async def count_tokens(
    provider: AnthropicBackend, body: bytes, client: Mapping[str, str], model: str
) -> bytes:
    """The upstream's own count (``{"input_tokens": N}``)."""
    data = codec.loads(body)
    _strip_gateway_thinking(data)  # decoded anyway: read the blocks, however spelled
    data["model"] = model  # Vertex's count-tokens takes the model in the body too
    if provider.vertex:
        data["anthropic_version"] = VERTEX_VERSION
    async with AsyncExitStack() as stack:
        resp = await open_native(
            provider,
            stack,
            count_url(provider),
            codec.dumps(data),
            client,
            betas=not provider.vertex,
        )
        return await read_capped(
            resp, ERROR_BODY_LIMIT, provider.config.id if provider.config else ""
        )
