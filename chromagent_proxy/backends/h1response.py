"""The response of the upstream HTTP/1.1 client (``h1client.py`` is one connection,
``h1pool.py`` the pool): what a request returns to the backends, and the reading of a
response head. Headers are parsed from the head's bytes only when someone asks for them
(most answers never do: bench/README.md, issue 20)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict, CIMultiDictProxy

if TYPE_CHECKING:
    from chromagent_proxy.backends.h1client import Connection


class Response:
    """What a request returns: ``status``, ``headers``, and the body through ``content``
    (``iter_any()``, ``is_eof()``) like aiohttp's ``ClientResponse`` offers it.
    ``encoding``: the Content-Encoding header's value (None: absent), read without
    building ``headers``, which most answers never need."""

    __slots__ = ("_conn", "_headers", "_raw", "encoding", "status")

    def __init__(self, conn: Connection) -> None:
        self._conn: Connection | None = conn
        self.status = conn.status
        self.encoding = conn.encoding
        self._raw = conn.raw_head
        self._headers: CIMultiDictProxy[str] | None = None

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        h = self._headers
        if h is None:
            h = self._headers = CIMultiDictProxy(CIMultiDict(header_lines(self._raw)))
        return h

    @property
    def content(self) -> Response:
        return self

    def iter_any(self) -> Response:
        return self

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        data = await conn.read()
        if not data:
            raise StopAsyncIteration
        return data

    def whole(self) -> bytes | None:
        """The whole body if it has all arrived (most small answers come with their
        head), else None: ``read_capped`` then takes it without iterating."""
        conn = self._conn
        if conn is None or not conn.done:
            return None
        return conn.take()

    def is_eof(self) -> bool:
        conn = self._conn
        return conn is None or conn.at_eof()

    def release(self) -> Any:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(True)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish(False)


def head_end(data: bytes) -> int:
    """Where the response head ends in ``data`` (after its blank line; CRLF or bare LF)."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if lf != -1 and (crlf == -1 or lf < crlf):
        return lf + 2
    return crlf + 4 if crlf != -1 else len(data)


def header_lines(raw: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of a head's header lines, as httptools validated them."""
    out: list[tuple[str, str]] = []
    for line in raw.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon:
            out.append((name.decode("latin-1"), value.strip().decode("latin-1")))
    return out
