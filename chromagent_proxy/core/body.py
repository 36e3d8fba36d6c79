"""A request body as the buffers it is made of, sent without joining them.

A relayed body whose model was renamed is the client's bytes with one value changed
(core/rawjson.py). Joining the pieces would copy the whole body (1 MB for a 1 MB prompt)
only for the socket to copy it again; ``Pieces`` keeps them apart (memoryviews of the
client's bytes around the new value) down to the upstream client, which writes them as
they are (backends/h1client.py). Whoever needs contiguous bytes (the aiohttp client, a
decode) calls ``joined``.
"""

from __future__ import annotations

from typing import Final, TypeAlias, final

Buffer: TypeAlias = bytes | memoryview
# Below this a body is joined: copying ≈ 1 KB costs less than carrying pieces through the
# calls to the socket (callgrind, openai-json: +0.9 % instructions with pieces).
JOIN_BELOW = 16 * 1024


@final
class Pieces:
    """Buffers that, in order, are one body; ``len`` is the body's size in bytes."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: tuple[Buffer, ...]) -> None:
        self.parts: Final = parts
        # Views are of bytes (format "B"): len is the byte count.
        self.size: Final = sum(map(len, parts))

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    def __repr__(self) -> str:
        return f"Pieces({len(self.parts)} parts, {self.size} bytes)"


Body: TypeAlias = bytes | Pieces


def joined(body: Body) -> bytes:
    """The body as one ``bytes`` (the same object when it already is one)."""
    return body if isinstance(body, bytes) else b"".join(body.parts)


def buffers(body: Body) -> tuple[Buffer, ...]:
    return (body,) if isinstance(body, bytes) else body.parts


def insert_after_brace(body: Body, insert: bytes) -> Body:
    """``body`` with ``insert`` right after its first ``{`` (the opening of a JSON object:
    only whitespace may come before it), nothing of a large body copied beyond its head."""
    if isinstance(body, bytes) and len(body) < JOIN_BELOW:
        i = body.find(b"{") + 1
        if i:
            return body[:i] + insert + body[i:]
    parts = buffers(body)
    for n, part in enumerate(parts):
        view = memoryview(part)
        # The brace is within the leading whitespace's length: look at a bounded head.
        i = bytes(view[:64]).find(b"{")
        if i == -1 and len(view) > 64:
            i = bytes(view).find(b"{")
        if i != -1:
            new = (view[: i + 1], insert, view[i + 1 :]) if i + 1 < len(view) else (view, insert)
            return Pieces((*parts[:n], *new, *parts[n + 1 :]))
    raise ValueError("the body is not a JSON object")
