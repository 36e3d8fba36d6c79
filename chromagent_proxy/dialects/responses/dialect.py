"""The OpenAI Responses dialect (``/v1/responses``): Codex CLI, the Agents SDK.

``openai`` backends with ``nativeResponses`` relay it as bytes; every other backend
gets it through the IR. ``store: true`` keeps the response (memory or Redis) for
``previous_response_id`` and the retrieval endpoints.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.core.body import Body
from chromagent_proxy.core.errors import GatewayError, InvalidRequest, NotFound
from chromagent_proxy.core.rawjson import with_model
from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.core.sse import Framed, SSEDecoder
from chromagent_proxy.dialects.base import (
    ConversationDialect,
    Inbound,
    client_session,
    decode_body,
)
from chromagent_proxy.dialects.responses import decode, request
from chromagent_proxy.dialects.responses.encode import ResponseEncoder, new_id
from chromagent_proxy.dialects.responses.store import ResponseStore
from chromagent_proxy.dialects.responses.tools import Tools, read_tools

if TYPE_CHECKING:  # a runtime import would point upward
    from chromagent_proxy.backends.base import BackendProvider, RequestContext

log = logging.getLogger("chromagent_proxy")
_INPUT = re.compile(rb'"input_tokens"\s*:\s*(\d+)')
_OUTPUT = re.compile(rb'"output_tokens"\s*:\s*(\d+)')
_CACHED = re.compile(rb'"cached_tokens"\s*:\s*(\d+)')
_REASONING = re.compile(rb'"reasoning_tokens"\s*:\s*(\d+)')


@dataclass(slots=True)
class Parsed:
    req: request.ResponsesRequest
    items: list[dict[str, Any]]
    tools: Tools
    previous_missing: bool = False  # previous_response_id not stored here
    new_items: list[dict[str, Any]] = field(default_factory=list)


class ResponsesDialect(ConversationDialect):
    name: ClassVar[str] = "responses"

    def __init__(
        self, sealer: Sealer, store: ResponseStore | None, refuse_hosted: bool = False
    ) -> None:
        self.sealer = sealer
        self.store = store
        self.refuse_hosted = refuse_hosted

    # -- request

    def parse(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> Inbound:
        req = decode_body(request.decode_request, body)
        request.refuse_unsupported(req)
        if isinstance(req.input, str):
            items: list[dict[str, Any]] = (
                [{"type": "message", "role": "user", "content": req.input}] if req.input else []
            )
        else:
            items = req.input
        tools = read_tools(req, self.refuse_hosted)
        images = any(
            isinstance(p, dict) and p.get("type") == "input_image"
            for it in items
            if isinstance(it.get("content"), list)
            for p in it["content"]
        )
        parsed = Parsed(req, items, tools, new_items=list(items))
        inbound = Inbound(
            req.model,
            req.stream,
            bool(tools.flat),
            images,
            body,
            parsed,
            session_id=client_session(
                headers.get("session-id") or headers.get("x-client-request-id")
            ),
        )
        if tools.dropped:
            # Codex always sends web_search; refusing would break every turn (documented).
            inbound.headers = {"x-chromagent-dropped-tools": ",".join(tools.dropped)}
        return inbound

    async def resolve(self, inbound: Inbound) -> None:
        parsed: Parsed = inbound.native
        prev = parsed.req.previous_response_id
        if not prev:
            return
        record = await self.store.get(prev) if self.store is not None else None
        if record is None:
            # Maybe an id of a natively relayed upstream (OpenAI keeps its own): only a
            # translated attempt needs it here (to_ir).
            parsed.previous_missing = True
            return
        parsed.items = [*record.get("input", ()), *record.get("output", ()), *parsed.items]

    def to_ir(self, inbound: Inbound, backend_dialect: str) -> ir.Request:
        parsed: Parsed = inbound.native
        if parsed.previous_missing:
            raise NotFound(
                f"Previous response with id '{parsed.req.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return decode.to_ir(parsed.req, parsed.items, parsed.tools, self.sealer, backend_dialect)

    # -- answer

    def stream_encoder(self, inbound: Inbound, rid: str, model: str) -> ResponseEncoder:
        parsed: Parsed = inbound.native
        return ResponseEncoder(parsed.req, parsed.tools, self.sealer, inbound.model)

    def complete(self, inbound: Inbound, answer: Answer, rid: str, model: str) -> bytes:
        parsed: Parsed = inbound.native
        enc = ResponseEncoder(parsed.req, parsed.tools, self.sealer, inbound.model)
        final = enc.whole(answer)
        inbound.state = enc
        return codec.dumps(final)

    def error_body(self, err: GatewayError) -> tuple[int, bytes, dict[str, str]]:
        return err.status, err.body(), {}

    def stream_error(self, err: GatewayError, encoder: Any = None) -> bytes:
        if isinstance(encoder, ResponseEncoder):
            return encoder.fail(err)
        # A relayed stream: the upstream's own grammar; end it with an error event.
        payload = codec.dumps(
            {"type": "error", "code": "server_error", "message": err.message, "param": err.param}
        )
        return b"event: error\ndata: " + payload + b"\n\n"

    async def completed(self, inbound: Inbound) -> None:
        parsed: Parsed = inbound.native
        enc = inbound.state
        if self.store is None or parsed.req.store is False or not isinstance(enc, ResponseEncoder):
            return
        if enc.final is None:
            return
        record = {
            "response": enc.final,
            "input": parsed.items,
            "output": enc.stored,
        }
        try:
            await self.store.put(enc.id, record)
        except Exception as exc:  # a store outage must not fail an answer already sent
            log.warning("responses: storing %s failed: %s", enc.id, exc)

    def release(self, inbound: Inbound) -> None:
        inbound.body = b""  # ``native`` stays: completed() stores its input items

    # -- native relay (openai backends with nativeResponses)

    def relays(self, provider: BackendProvider) -> bool:
        cfg = provider.config
        return cfg is not None and cfg.native_responses and hasattr(provider, "post_native")

    def _body(self, inbound: Inbound, ctx: RequestContext) -> Body:
        return with_model(inbound.body, inbound.model, ctx.upstream_model)

    async def relay(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> tuple[bytes, ir.Usage | None]:
        payload = await provider.post_native(  # type: ignore[attr-defined]
            "responses", self._body(inbound, ctx)
        )
        return payload, _usage(payload)

    async def relay_stream(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> AsyncIterator[Any]:
        decoder = SSEDecoder()
        async for data in provider.stream_native(  # type: ignore[attr-defined]
            "responses", self._body(inbound, ctx)
        ):
            events = decoder.feed(data)
            if not events:
                continue
            out = []
            for ev in events:
                head = b"event: " + ev.event.encode() + b"\n" if ev.event else b""
                out.append(head + b"data: " + ev.data + b"\n\n")
                if ev.data.startswith(b'{"type":"response.completed"') or (
                    b'"response.completed"' in ev.data[:64]
                    or b'"response.incomplete"' in ev.data[:64]
                ):
                    u = _usage(ev.data)
                    if u is not None:
                        yield u
            yield Framed(b"".join(out))


def _usage(payload: bytes) -> ir.Usage | None:
    i = payload.rfind(b'"usage"')
    if i < 0:
        return None
    m_in, m_out = _INPUT.search(payload, i), _OUTPUT.search(payload, i)
    if m_in is None or m_out is None:
        return None
    cached = _CACHED.search(payload, i)
    reasoning = _REASONING.search(payload, i)
    total_in, total_out = int(m_in.group(1)), int(m_out.group(1))
    c = int(cached.group(1)) if cached else 0
    r = int(reasoning.group(1)) if reasoning else 0
    return ir.Usage(input=total_in - c, output=total_out - r, cache_read=c, reasoning=r)


# ---------------------------------------------------------------- retrieval endpoints


async def retrieve(store: ResponseStore | None, response_id: str) -> dict[str, Any]:
    record = await store.get(response_id) if store is not None else None
    if record is None:
        raise NotFound(
            f"No response with id '{response_id}' is stored here (only responses created "
            "with store: true, until they expire)",
            param="response_id",
        )
    return record


def input_items(record: dict[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    items = [it if "id" in it else {**it, "id": new_id("msg")} for it in record.get("input", ())]
    if query.get("order", "desc") == "desc":
        items.reverse()
    after = query.get("after")
    if after:
        ids = [it["id"] for it in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    try:
        limit = max(1, min(100, int(query.get("limit", "20"))))
    except ValueError:
        raise InvalidRequest("limit must be a whole number", param="limit") from None
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
