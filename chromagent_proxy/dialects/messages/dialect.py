"""The Anthropic Messages client dialect (``POST /v1/messages``): what the serving loop
needs from it. Decode (decode.py), encode (encode.py), errors (errors.py), and the native
relay to anthropic / vertex-anthropic backends (relay.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeGuard

from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.core.errors import GatewayError, UpstreamError, UpstreamProtocolError
from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.dialects.base import ConversationDialect, EventEncoder, Inbound, RelayPart
from chromagent_proxy.dialects.messages import decode, encode, errors, relay
from chromagent_proxy.dialects.messages.schema import MessagesRequest
from chromagent_proxy.dialects.messages.signing import Signer

if TYPE_CHECKING:
    from chromagent_proxy.backends.base import BackendProvider, RequestContext

# Client headers the native path forwards (others are the client's business).
FORWARDED = ("anthropic-version", "anthropic-beta")


@dataclass(slots=True)
class Parsed:
    """``Inbound.native`` of this dialect."""

    request: MessagesRequest
    headers: dict[str, str]  # the FORWARDED headers the client sent
    gateway_thinking: bool  # the history holds thinking blocks the gateway signed


_NATIVE: dict[type, bool] = {}


def _native(provider: object) -> TypeGuard[relay.MessagesNative]:
    # isinstance against a runtime_checkable Protocol looks up every member each time
    # (≈ 2 % of a request's samples); a provider's class does not change its methods.
    kind = type(provider)
    known = _NATIVE.get(kind)
    if known is None:
        known = _NATIVE[kind] = isinstance(provider, relay.MessagesNative)
    return known


def message_id(rid: str) -> str:
    return "msg_" + rid


class MessagesDialect(ConversationDialect):
    name: ClassVar[str] = "messages"

    def __init__(self, sealer: Sealer | None = None) -> None:
        self.signer = Signer(sealer)

    def parse(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> Inbound:
        req = decode.parse_body(body)
        forwarded = {h: v for h in FORWARDED if (v := headers.get(h))}
        images, gateway_thinking = decode.scan(req)
        return Inbound(
            model=req.model,
            stream=bool(req.stream),
            tools=bool(req.tools),
            images=images,
            body=body,
            native=Parsed(req, forwarded, gateway_thinking),
            include_usage=True,
            session_id=decode.session_of(headers, req),
        )

    def to_ir(self, inbound: Inbound, backend_dialect: str) -> ir.Request:
        parsed: Parsed = inbound.native
        return decode.to_ir(
            parsed.request, inbound.body, backend_dialect, self.signer, inbound.session_id
        )

    def stream_encoder(self, inbound: Inbound, rid: str, model: str) -> EventEncoder:
        return encode.StreamEncoder(message_id(rid), model, self.signer)

    def complete(self, inbound: Inbound, answer: Answer, rid: str, model: str) -> bytes:
        if answer.error is not None:
            raise UpstreamError(answer.error.message, retryable=False)
        try:
            msg = encode.message(answer, message_id(rid), model, self.signer)
        except ValueError as exc:  # tool arguments that are not JSON
            raise UpstreamProtocolError(
                f"the backend's tool call arguments are not valid JSON: {exc}"
            ) from None
        return codec.dumps(msg)

    def error_body(self, err: GatewayError) -> tuple[int, bytes, dict[str, str]]:
        return errors.error_body(err)

    def stream_error(self, err: GatewayError, encoder: EventEncoder | None) -> bytes:
        # Nothing else after the error event (no block stop, message_delta or message_stop):
        # the client must not take a cut answer for a finished one.
        return errors.stream_error(err)

    def relays(self, provider: BackendProvider) -> bool:
        return self.name in provider.native_dialects and _native(provider)

    async def relay(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> tuple[bytes, ir.Usage | None]:
        assert _native(provider)
        parsed: Parsed = inbound.native
        return await relay.relay(
            provider,
            inbound.body,
            parsed.headers,
            ctx.client_model,
            ctx.upstream_model,
            ctx.backend_id,
            parsed.gateway_thinking,
        )

    def relay_stream(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> AsyncIterator[RelayPart]:
        assert _native(provider)
        parsed: Parsed = inbound.native
        return relay.relay_stream(
            provider,
            inbound.body,
            parsed.headers,
            ctx.client_model,
            ctx.upstream_model,
            ctx.backend_id,
            parsed.gateway_thinking,
        )
