"""What every client dialect (chat, messages, responses, embeddings) gives the request path.

The request path (serving.py) is one loop for every dialect: parse → route → for each
attempt, relay natively (same-dialect backend), or go through the IR (translating
backend) → answer or stream. A dialect supplies only what differs: how its body is
decoded, how IR events are encoded back, how errors look, and how it relays.
Conversation dialects stream and translate through the IR; a direct dialect (embeddings)
answers in one piece, so it has none of the conversation methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import msgspec

from chromagent_proxy.core import ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.core.errors import GatewayError, InvalidRequest
from chromagent_proxy.schema.openai import validation_param

T = TypeVar("T")


def decode_body(
    decode: Callable[[bytes], T],
    body: bytes,
    param: Callable[[msgspec.ValidationError], str | None] = validation_param,
) -> T:
    """Decode a client's JSON body; every failure is a 400 saying what is wrong (``param``
    turns msgspec's path into the dialect's way of naming the field)."""
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid request: {exc}", param=param(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        # msgspec raises this (not DecodeError) for invalid UTF-8 inside a JSON string.
        raise InvalidRequest("The request body is not valid UTF-8") from None
    except RecursionError:
        # Skipping a deeply nested unknown field recurses; refuse rather than 500.
        raise InvalidRequest("The request body is nested too deeply") from None


def client_session(value: str | None) -> str | None:
    """A session id a client named (a header, or a field of its body), as the access log
    keeps it: at most 128 printable characters, else none. A header's bytes that are not
    UTF-8 arrive as lone surrogates, which are not printable."""
    return value[:128] if value and value.isprintable() else None


if TYPE_CHECKING:
    from chromagent_proxy.backends.base import BackendProvider, RequestContext


@dataclass(slots=True)
class Inbound:
    """A decoded client request: what routing and the loop need, plus the dialect's own
    decoded form (``native``) and the raw body for relays."""

    model: str
    stream: bool
    tools: bool
    images: bool
    body: bytes
    native: Any
    include_usage: bool = False  # chat: stream_options.include_usage (others: always usage)
    session_id: str | None = None  # for the access log (never a metric label)
    headers: dict[str, str] | None = None  # extra response headers the dialect decided on
    state: Any = None  # the dialect's own per-request state (e.g. the finished response)


class EventEncoder(Protocol):
    """IR event lists → the dialect's stream bytes (one buffer per list)."""

    usage: ir.Usage | None

    def encode(self, events: list[ir.Event]) -> bytes: ...

    def finish(self) -> bytes: ...


# A relayed stream yields framed bytes for the client, or an ``ir.Usage`` it read on the
# way (reported to metrics and the access log, never written).
RelayPart = bytes | ir.Usage


class Dialect(ABC):
    """What every client dialect provides: its body, its errors, and the same-dialect relay."""

    name: ClassVar[str]

    @abstractmethod
    def parse(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> Inbound:
        """Decode and validate; raise InvalidRequest (400) naming the field."""

    @abstractmethod
    def error_body(self, err: GatewayError) -> tuple[int, bytes, dict[str, str]]:
        """(status, JSON body, extra headers) of an error answered before any byte."""

    async def resolve(self, inbound: Inbound) -> None:
        """After parse, before routing: load what the request refers to (stored state)."""

    async def completed(self, inbound: Inbound) -> None:
        """After a successful answer was sent (e.g. store it)."""

    def relays(self, provider: BackendProvider) -> bool:
        return self.name in provider.native_dialects

    @abstractmethod
    async def relay(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> tuple[bytes, ir.Usage | None]:
        """Same-dialect backend (``relays``), non-stream: the upstream's answer bytes and
        its usage."""


class ConversationDialect(Dialect):
    """Chat, Messages, Responses: streams, and the IR path for translating backends."""

    #: written after the last event of a successful stream (chat: ``data: [DONE]``)
    stream_end: ClassVar[bytes] = b""

    @abstractmethod
    def to_ir(self, inbound: Inbound, backend_dialect: str) -> ir.Request:
        """The IR request for a translating backend (``backend_dialect`` for the policy)."""

    @abstractmethod
    def stream_encoder(self, inbound: Inbound, rid: str, model: str) -> EventEncoder: ...

    @abstractmethod
    def complete(self, inbound: Inbound, answer: Answer, rid: str, model: str) -> bytes:
        """A whole (non-stream) answer's JSON body."""

    @abstractmethod
    def stream_error(self, err: GatewayError, encoder: EventEncoder | None) -> bytes:
        """The framed event(s) that end a stream that failed after its first byte
        (``encoder``: the stream's encoder on the IR path, None on a relay)."""

    @abstractmethod
    def relay_stream(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> AsyncIterator[RelayPart]:
        """Same-dialect backend, stream: framed bytes as they arrive (and usage)."""

    def relayed(self, part: Any, want_usage: bool) -> tuple[bytes, ir.Usage | None]:
        """What to write for one relayed stream part, and the usage it carries."""
        if type(part) is ir.Usage:
            return b"", part
        return part, None

    def release(self, inbound: Inbound) -> None:
        """A stream's first part has reached the client, so no other attempt will run: drop
        what only another attempt would need (the raw body, the decoded request), which an
        open stream would otherwise keep to its end (memory per open stream, issue 20).
        A dialect whose ``completed`` reads ``native`` keeps it."""
        inbound.body = b""
        inbound.native = None


class DirectDialect(Dialect):
    """A one-shot dialect that is no conversation (embeddings): never streams, and a
    backend that does not relay it answers through ``answer``."""

    @abstractmethod
    async def answer(
        self, provider: BackendProvider, inbound: Inbound, ctx: RequestContext
    ) -> tuple[bytes, ir.Usage | None]:
        """The whole answer from a backend that does not relay this dialect."""


# What the request path serves: every dialect is one of the two.
AnyDialect = ConversationDialect | DirectDialect
