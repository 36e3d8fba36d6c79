"""Incremental SSE and NDJSON decoders, and the one framing function for output.

The decoders keep only the unterminated tail, scan only bytes they have not
scanned before, and cap the tail so a broken upstream cannot grow memory.
"""

from __future__ import annotations

from typing import NamedTuple

from chromagent_proxy.core.errors import UpstreamProtocolError

DONE = b"data: [DONE]\n\n"
MAX_LINE_BYTES = 8 * 1024 * 1024


def frame(payload: bytes) -> bytes:
    """Frame one JSON payload as an SSE data event."""
    return b"data: " + payload + b"\n\n"


class Framed(bytes):
    """One or more complete SSE events, already framed, that arrived in one upstream read.

    A backend may yield this as a stream part: the handler writes it as is, so
    events that arrived together leave in one write (one syscall) instead of one
    each. It is never the first event of a stream alone by accident: a relay
    yields whatever it has as soon as a read is decoded, so nothing waits.
    """

    __slots__ = ()


def framed(payloads: list[bytes]) -> Framed:
    """``frame`` each payload and join them: the bytes that would have been written one by one."""
    return Framed(b"".join([b"data: " + p + b"\n\n" for p in payloads]))


class SSEEvent(NamedTuple):
    event: str | None
    data: bytes


class SSEDecoder:
    """Feed raw bytes, get complete SSE events (CR, LF and CRLF line endings)."""

    __slots__ = ("_buf", "_data", "_event", "_max", "_scan", "_skip_lf")

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._scan = 0
        self._data: list[bytes] = []
        self._event: str | None = None
        self._skip_lf = False
        self._max = max_line_bytes

    @property
    def idle(self) -> bool:
        """Nothing pending: the next byte fed starts a new event."""
        return not (self._buf or self._data or self._event is not None or self._skip_lf)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        # Fast path (a fifth of a relayed stream's CPU went to the line loop below): with
        # nothing pending, split whole events on the blank line and slice the common
        # shapes, "data: <payload>" and "event: <name>\ndata: <payload>", without a
        # per-line copy. Anything else, and the unterminated tail, takes the line loop,
        # which gives the same events (tests/unit/test_sse_fastpath.py checks that).
        if not chunk:
            return []  # an empty read must not forget a CR that may pair with the next LF
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]  # the LF of a CRLF split across reads
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                return self._feed(chunk)  # maybe half a CRLF: the line loop tracks it
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out: list[SSEEvent] = []
        if self._buf or self._data or self._event is not None:
            # An event left unfinished by the last read: the line loop finishes it (up to
            # the first blank line), then the rest takes the fast path. Without this, one
            # read that ends mid-event (most reads of a long stream) sent every later read
            # through the line loop.
            if not self._buf and chunk[:1] == b"\n":
                end = 1  # the previous read ended a line; this LF is the blank line
            else:
                end = chunk.find(b"\n\n")
                if end == -1:
                    return self._feed(chunk)
                end += 2
            out = self._feed(chunk[:end])
            chunk = chunk[end:]
        blocks = chunk.split(b"\n\n")
        tail = blocks.pop()
        for block in blocks:
            if block[:6] == b"data: ":
                if b"\n" not in block:
                    out.append(SSEEvent(None, block[6:]))
                    continue
            elif block[:7] == b"event: ":
                nl = block.find(b"\n")
                if block[nl + 1 : nl + 7] == b"data: " and block.find(b"\n", nl + 1) == -1:
                    name = block[6:nl].strip().decode("utf-8", "replace")
                    out.append(SSEEvent(name, block[nl + 7 :]))
                    continue
            elif not block:
                continue
            out.extend(self._feed(block + b"\n\n"))
        if tail:
            out.extend(self._feed(tail))
        return out

    def _feed(self, chunk: bytes) -> list[SSEEvent]:
        """The general line loop: any framing, any split, state kept across reads."""
        if not chunk:
            return []  # an empty read must not forget a CR that may pair with the next LF
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        if b"\r" in chunk:
            # A CR at the very end may be the first half of a CRLF split across reads.
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        buf += chunk
        out: list[SSEEvent] = []
        start = 0
        find = buf.find
        nl = find(b"\n", self._scan)
        while nl != -1:
            line = bytes(buf[start:nl])
            start = nl + 1
            if not line:
                if self._data:
                    data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    out.append(SSEEvent(self._event, data))
                    self._data = []
                self._event = None
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value[:1] == b" " else value)
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8", "replace")
            # Comments (":") and id/retry fields carry nothing a translator needs.
            nl = find(b"\n", start)
        if start:
            del buf[:start]
        self._scan = len(buf)
        if len(buf) > self._max:
            raise UpstreamProtocolError(f"upstream sent an SSE line longer than {self._max} bytes")
        return out

    def flush(self) -> list[SSEEvent]:
        """End of input: dispatch what is complete; a partial line is treated as a last line."""
        out = self.feed(b"\n\n") if (self._buf or self._data) else []
        self._buf.clear()
        self._scan = 0
        return out


class NDJSONDecoder:
    """Feed raw bytes, get complete non-empty JSON lines."""

    __slots__ = ("_buf", "_max", "_scan")

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._scan = 0
        self._max = max_line_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf
        buf += chunk
        out: list[bytes] = []
        start = 0
        nl = buf.find(b"\n", self._scan)
        while nl != -1:
            line = bytes(buf[start:nl]).strip()
            if line:
                out.append(line)
            start = nl + 1
            nl = buf.find(b"\n", start)
        if start:
            del buf[:start]
        self._scan = len(buf)
        if len(buf) > self._max:
            raise UpstreamProtocolError(
                f"upstream sent an NDJSON line longer than {self._max} bytes"
            )
        return out

    def flush(self) -> list[bytes]:
        line = bytes(self._buf).strip()
        self._buf.clear()
        self._scan = 0
        return [line] if line else []
