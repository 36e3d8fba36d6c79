"""The one stream shell every translating backend runs: read → frame → decode → step.

A backend supplies a ``Translator`` (pure functions over its upstream events and
a small state object); the shell owns the I/O: it reads the upstream body as it
arrives, splits it into events (SSE or NDJSON), decodes each, runs the pure
``step``, and yields **all IR events of one upstream read as one list**, so the
client side encodes them into one write. ``finish`` runs at the end of input.

The shell never reports to metrics itself: the request path observes the lists it
yields (first byte, usage, errors) — nothing here is wired in from the side.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Generic, Literal, TypeVar

from chromagent_proxy.backends.upstream_read import (
    STREAM_ERRORS,
    UpstreamResponse,
    body_chunks,
    stream_error,
)
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.errors import GatewayError, UpstreamProtocolError
from chromagent_proxy.core.sse import NDJSONDecoder, SSEDecoder

S = TypeVar("S")
E = TypeVar("E")


_TAIL = 8192


class Translator(Generic[S, E]):
    """One backend dialect's pure stream functions (what the golden tests drive): decode
    one event payload, ``step(state, event) -> IR events``, ``finish(state)`` at the end."""

    __slots__ = ("decode", "finish", "framing", "step")

    def __init__(
        self,
        framing: Literal["sse", "ndjson"],
        decode: Callable[[bytes], E],
        step: Callable[[S, E], list[ir.Event]],
        finish: Callable[[S], list[ir.Event]],
    ) -> None:
        self.framing = framing
        self.decode = decode
        self.step = step
        self.finish = finish


TrailingError = Callable[[bytes], GatewayError | None]


async def stream_events(
    resp: UpstreamResponse,
    backend_id: str,
    translator: Translator[S, E],
    state: S,
    *,
    trailing_error: TrailingError | None = None,
) -> AsyncIterator[list[ir.Event]]:
    """Yield the IR events of each upstream read (lists are never empty).

    ``trailing_error`` looks at the last bytes of a stream that ``finish`` found
    truncated: some upstreams append a bare JSON error after the last event.
    """
    decoder: SSEDecoder | NDJSONDecoder = (
        SSEDecoder() if translator.framing == "sse" else NDJSONDecoder()
    )
    decode, step = translator.decode, translator.step
    tail = b""
    try:
        async for data in body_chunks(resp, backend_id):
            if trailing_error is not None:
                tail = data[-_TAIL:] if len(data) >= _TAIL else (tail + data)[-_TAIL:]
            out: list[ir.Event] = []
            try:
                for payload in _payloads(decoder, data):
                    # _decode inlined: this loop runs once per upstream event.
                    try:
                        event = decode(payload)
                    except (codec.DecodeError, codec.ValidationError) as exc:
                        raise _unreadable(backend_id, exc) from None
                    out += step(state, event)
            except GatewayError:
                # Events before the failing one (same read) still reach the client first.
                if out:
                    yield out
                raise
            if out:
                yield out
    except STREAM_ERRORS as exc:
        raise stream_error(backend_id, exc) from None
    out = []
    for payload in _payloads(decoder, None):
        out += step(state, _decode(decode, payload, backend_id))
    try:
        out += translator.finish(state)
    except UpstreamProtocolError:
        if trailing_error is not None:
            err = trailing_error(tail)
            if err is not None:
                raise err from None
        raise
    if out:
        yield out


def _payloads(decoder: SSEDecoder | NDJSONDecoder, data: bytes | None) -> list[bytes]:
    """The event payloads in ``data`` (``None``: what is left at the end of input)."""
    if isinstance(decoder, NDJSONDecoder):
        return decoder.feed(data) if data is not None else decoder.flush()
    events = decoder.feed(data) if data is not None else decoder.flush()
    return [e.data for e in events if e.data and e.data != b"[DONE]"]


def _decode(decode: Callable[[bytes], E], payload: bytes, backend_id: str) -> E:
    try:
        return decode(payload)
    except (codec.DecodeError, codec.ValidationError) as exc:
        raise _unreadable(backend_id, exc) from None


def _unreadable(backend_id: str, exc: Exception) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"backend '{backend_id}' sent a stream event this gateway cannot read: {exc}"
    )
