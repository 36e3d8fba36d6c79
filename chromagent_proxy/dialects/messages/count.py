"""``POST /v1/messages/count_tokens``: the count, where it comes from, and a brief cache.

- anthropic / vertex-anthropic backends: the upstream's own count endpoint (native.py);
- backends that implement ``count_tokens(ir.Request, ctx) -> int`` (Gemini's countTokens);
- everything else: an estimate — ⌈UTF-8 bytes of the text (system, messages, tool inputs
  and results, thinking, tool names/descriptions/schemas) / 4⌉ + 1,600 per image + 4 per
  message. Enough for a client's budget checks; not a billing number.

Claude Code may call it often with the same prefix, so answers are cached for
``TTL_S`` seconds in a bounded LRU keyed by (backend, upstream model, body digest).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Protocol, runtime_checkable

from chromagent_proxy.core import codec, ir
from chromagent_proxy.dialects.messages.schema import Block, MessagesRequest, tool_value

TTL_S = 30.0
MAX_ENTRIES = 1024
IMAGE_TOKENS = 1600
PER_MESSAGE = 4


@runtime_checkable
class TokenCounter(Protocol):
    """A translating backend that can count a request upstream (Gemini countTokens)."""

    async def count_tokens(self, request: ir.Request, ctx: Any) -> int: ...


class CountCache:
    def __init__(self, ttl: float = TTL_S, size: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()

    @staticmethod
    def key(backend_id: str, model: str, body: bytes) -> bytes:
        h = hashlib.blake2b(body, digest_size=20)
        h.update(b"\0" + backend_id.encode() + b"\0" + model.encode())
        return h.digest()

    def get(self, key: bytes) -> bytes | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return hit[1]

    def put(self, key: bytes, value: bytes) -> None:
        self._items[key] = (time.monotonic() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def _text_bytes(value: str | None) -> int:
    return len(value.encode()) if value else 0


def _block_bytes(b: Block) -> tuple[int, int]:
    """(text bytes, images) of one block."""
    if b.type == "image":
        return 0, 1
    n = _text_bytes(b.text) + _text_bytes(b.thinking) + _text_bytes(b.name)
    if b.input is not None:
        n += len(codec.dumps(b.input))
    images = 0
    if isinstance(b.content, str):
        n += _text_bytes(b.content)
    elif b.content:
        for c in b.content:
            cn, ci = _block_bytes(c)
            n += cn
            images += ci
    return n, images


def estimate(req: MessagesRequest) -> int:
    size = 0
    images = 0
    if isinstance(req.system, str):
        size += _text_bytes(req.system)
    elif req.system:
        size += sum(_text_bytes(b.text) for b in req.system)
    for msg in req.messages:
        if isinstance(msg.content, str):
            size += _text_bytes(msg.content)
            continue
        for b in msg.content:
            n, i = _block_bytes(b)
            size += n
            images += i
    for t in req.tools or ():
        size += _text_bytes(t.name) + _text_bytes(tool_value(t.description))
        schema = tool_value(t.input_schema)
        if schema:
            size += len(codec.dumps(schema))
    return -(-size // 4) + images * IMAGE_TOKENS + PER_MESSAGE * len(req.messages)


def answer(tokens: int) -> bytes:
    return codec.dumps({"input_tokens": tokens})
