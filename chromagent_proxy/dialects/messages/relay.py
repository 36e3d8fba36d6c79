"""The native path's reading side: relay an anthropic / vertex-anthropic answer's bytes to
the client as they arrive, reading only the usage on the way.

A stream is cut at event boundaries (the last blank line of each read; the rest waits for
the next read), so what the client has received is always whole events — an error event
the gateway appends after a failure never lands inside half an event. Usage is read from
the two events that carry it (``message_start``: input side; ``message_delta``: final
output, and input again when present) without decoding any other event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Protocol, runtime_checkable

import msgspec

from chromagent_proxy.backends.upstream_read import (
    DEFAULT_BODY_LIMIT,
    STREAM_ERRORS,
    UpstreamResponse,
    read_capped,
    stream_error,
)
from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.errors import UpstreamProtocolError
from chromagent_proxy.core.sse import MAX_LINE_BYTES
from chromagent_proxy.schema.anthropic import Message, StreamEvent
from chromagent_proxy.schema.anthropic import Usage as WireUsage


@runtime_checkable
class MessagesNative(Protocol):
    """What a backend with "messages" in ``native_dialects`` offers (backends/anthropic)."""

    async def open_messages(
        self,
        stack: AsyncExitStack,
        body: bytes,
        client_headers: Mapping[str, str],
        client_model: str,
        model: str,
        stream: bool,
        gateway_thinking: bool,
    ) -> UpstreamResponse:
        """``gateway_thinking``: the history holds thinking blocks the gateway signed
        (decode.scan), which the upstream cannot read: strip them."""
        ...

    async def count_messages_tokens(
        self, body: bytes, client_headers: Mapping[str, str], model: str
    ) -> bytes: ...


_event = codec.decoder(StreamEvent).decode
MAX_EVENT_BYTES = MAX_LINE_BYTES
_message = codec.decoder(Message).decode


class UsageReader:
    __slots__ = ("cache_read", "cache_write", "input", "output", "seen")

    def __init__(self) -> None:
        self.input = self.output = self.cache_read = self.cache_write = 0
        self.seen = False

    def take(self, u: WireUsage | None) -> None:
        if u is None:
            return
        self.seen = True
        if u.input_tokens is not None:
            self.input = u.input_tokens
        if u.output_tokens is not None:
            self.output = u.output_tokens
        if u.cache_read_input_tokens is not None:
            self.cache_read = u.cache_read_input_tokens
        if u.cache_creation_input_tokens is not None:
            self.cache_write = u.cache_creation_input_tokens

    def scan(self, events: bytes) -> bool:
        """Read usage from the usage-carrying events in ``events``; True after message_delta."""
        done = False
        for marker in (b'"message_start"', b'"message_delta"'):
            at = events.find(marker)
            while at >= 0:
                start = events.rfind(b"data:", 0, at)
                end = events.find(b"\n", at)
                if start >= 0:
                    try:
                        ev = _event(events[start + 5 : end if end >= 0 else len(events)])
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        ev = None
                    if ev is not None and ev.type == "message_start" and ev.message is not None:
                        self.take(ev.message.usage)
                    elif ev is not None and ev.type == "message_delta":
                        self.take(ev.usage)
                        done = True
                at = events.find(marker, at + len(marker))
        return done

    def usage(self) -> ir.Usage:
        return ir.Usage(
            input=self.input,
            output=self.output,
            cache_read=self.cache_read,
            cache_write=self.cache_write,
        )


async def relay(
    provider: MessagesNative,
    body: bytes,
    headers: Mapping[str, str],
    client_model: str,
    model: str,
    backend_id: str,
    gateway_thinking: bool,
) -> tuple[bytes, ir.Usage | None]:
    async with AsyncExitStack() as stack:
        resp = await provider.open_messages(
            stack, body, headers, client_model, model, False, gateway_thinking
        )
        data = await read_capped(resp, DEFAULT_BODY_LIMIT, backend_id)
    try:
        msg = _message(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UpstreamProtocolError(
            f"backend '{backend_id}' sent a response that is not a Messages object: {exc}"
        ) from None
    reader = UsageReader()
    reader.take(msg.usage)
    return data, reader.usage() if reader.seen else None


async def relay_stream(
    provider: MessagesNative,
    body: bytes,
    headers: Mapping[str, str],
    client_model: str,
    model: str,
    backend_id: str,
    gateway_thinking: bool,
) -> AsyncIterator[bytes | ir.Usage]:
    reader = UsageReader()
    reported = False
    ended = False  # message_stop or an error event went through
    tail = b""
    async with AsyncExitStack() as stack:
        resp = await provider.open_messages(
            stack, body, headers, client_model, model, True, gateway_thinking
        )
        try:
            async for data in resp.content.iter_any():
                if tail:
                    data = tail + data
                cut = data.rfind(b"\n\n")
                if cut < 0:
                    if len(data) > MAX_EVENT_BYTES:
                        raise UpstreamProtocolError(
                            f"backend '{backend_id}' sent a stream event over "
                            f"{MAX_EVENT_BYTES} bytes"
                        )
                    tail = data
                    continue
                whole, tail = data[: cut + 2], data[cut + 2 :]
                if not ended and (b"event: message_stop" in whole or b"event: error" in whole):
                    ended = True
                yield whole
                if (b'"message_start"' in whole or b'"message_delta"' in whole) and reader.scan(
                    whole
                ):
                    reported = True
                    yield reader.usage()
        except STREAM_ERRORS as exc:
            raise stream_error(backend_id, exc) from None
    if not reported and reader.seen:
        yield reader.usage()
    if not ended:
        # Cut off (mid-event, or before message_stop): the client must not take it for a
        # finished answer; the serving loop ends the stream with an error event.
        raise UpstreamProtocolError(
            f"backend '{backend_id}' closed the stream before message_stop", retryable=True
        )
