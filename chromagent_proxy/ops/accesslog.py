"""Logging: one access-log line per request (JSON or text) and the app log format.

The access line has the fields in ``FIELDS`` (an ``AccessLine``): one JSON object per
line for ``logFormat: json`` (for log shippers), a short human line for ``text``.
Nothing that could carry a secret or user content is ever put into it: no headers, no
query string, no body.

With the CLI's logging (``setup_logging``) the line is rendered straight to bytes and
appended to the stdout handler's buffer: no LogRecord, no formatter, no handler lock
per request (that machinery cost ≈ 6 % of a small request, bench/README.md). The
buffer is written a few times a second (and at exit, and whenever it passes 64 KiB), so
a busy gateway makes one write syscall per batch instead of one per request. Embedded
without that setup, lines go to the ``chromagent_proxy.access`` logger as dict
messages, for whatever handlers the application configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
from typing import Any, Literal, TextIO

import msgspec
import orjson

ACCESS_LOGGER = "chromagent_proxy.access"


class AccessLine(msgspec.Struct):
    """One access line, its fields in log order. The edge builds one per request: a struct
    is made and encoded in C at about half the instructions of a dict through orjson
    (≈ 7 k of ≈ 600 k per small request, bench/README.md); logging's handlers get the dict."""

    time: str
    request_id: str
    client_ip: str
    method: str
    path: str
    status: int
    backend: str | None
    model: str | None
    stream: bool
    latency_ms: float
    ttft_ms: float | None
    tokens_in: int
    tokens_out: int
    attempts: int
    session_id: str | None


FIELDS = AccessLine.__struct_fields__
_encode_into = msgspec.json.Encoder().encode_into
FLUSH_INTERVAL_S = 0.2
FLUSH_BYTES = 64 * 1024

_sec = -1
_prefix = ""
# ".000Z" … ".999Z": the millisecond suffixes, formatted once (a format spec per line costs
# more than the rest of iso_time); one more ".999Z" in case float rounding gives 1000.
_MILLIS = (*(f".{ms:03d}Z" for ms in range(1000)), ".999Z")


def iso_time(ts: float) -> str:
    """UTC ISO-8601 with milliseconds; the seconds part is formatted once per second."""
    global _sec, _prefix
    sec = int(ts)
    if sec != _sec:
        _prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _sec = sec
    return _prefix + _MILLIS[int((ts - sec) * 1000)]


def millis(seconds: float) -> float:
    """``seconds`` (a non-negative duration) in ms to 3 decimals: ``round(seconds * 1000, 3)``
    at a fraction of its cost (round with digits goes through a decimal string); an exact
    tie at half a microsecond rounds up instead of to even."""
    return int(seconds * 1_000_000 + 0.5) / 1000


class JsonFormatter(logging.Formatter):
    """Access records (dict messages) as they are; app records as time/level/logger/message."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg
        if isinstance(msg, dict):
            return orjson.dumps(msg).decode()
        data: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()


# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators: in a text
# log line they could end the line and forge the next one (a model name is the client's).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: Any) -> str:
    """``value`` as text on one line: control characters become ``\\xNN`` / ``\\uNNNN``."""
    text = value if isinstance(value, str) else str(value)
    return text if text.isprintable() else _CONTROL.sub(_escape_char, text)


class TextFormatter(logging.Formatter):
    """For terminals: ``time status method path backend/model latency ...``.

    Every value that may come from a client is escaped (``escape``): one record, one line.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        f = record.msg
        if not isinstance(f, dict):
            message = record.getMessage()
            if not message.isprintable():
                # A copy: other handlers of the same record must still see the original.
                record = logging.makeLogRecord({**record.__dict__, "msg": escape(message)})
                record.args = None
            return super().format(record)
        return text_line(f)


def text_line(f: dict[str, Any]) -> str:
    # Control characters in a client-chosen value (request id, path) cannot forge lines.
    f = {k: escape(v) if isinstance(v, str) else v for k, v in f.items()}
    ttft = f" ttft={f['ttft_ms']}ms" if f.get("ttft_ms") is not None else ""
    tokens = (
        f" tokens={f['tokens_in']}/{f['tokens_out']}"
        if f.get("tokens_in") or f.get("tokens_out")
        else ""
    )
    return (
        f"{f['time']} {f['client_ip']} {f['method']} {f['path']} {f['status']} "
        f"{f['backend'] or '-'}/{f['model'] or '-'}{' stream' if f['stream'] else ''} "
        f"{f['latency_ms']}ms{ttft}{tokens} attempts={f['attempts']} id={f['request_id']}"
    )


def _json_bytes(fields: dict[str, Any]) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)


def _text_bytes(fields: dict[str, Any]) -> bytes:
    return (text_line(fields) + "\n").encode()


class BatchedStreamHandler(logging.StreamHandler[TextIO]):
    """Access lines as bytes in a buffer, written in batches by ``flush_now`` (on a timer).

    ``render`` turns an access dict into its line; ``append`` is the request path's
    entry (AccessLog.write). Records that still come through logging (``emit``) join the
    same buffer, so lines keep their order.
    """

    def __init__(self, stream: TextIO, fmt: Literal["json", "text"] = "json") -> None:
        super().__init__(stream)
        self.render = _json_bytes if fmt == "json" else _text_bytes
        self.json = fmt == "json"
        self.buffer = bytearray()

    def append(self, line: bytes) -> None:
        buf = self.buffer
        buf += line
        if len(buf) >= FLUSH_BYTES:
            self.flush_now()

    def append_line(self, line: AccessLine) -> None:
        """The request path's entry: the line encoded straight into the buffer."""
        buf = self.buffer
        end = len(buf)
        try:
            if self.json:
                _encode_into(line, buf, -1)
                buf += b"\n"
            else:
                buf += _text_bytes(msgspec.structs.asdict(line))
        except UnicodeEncodeError:
            # A header's bytes that are not UTF-8 reach Python as lone surrogates (aiohttp
            # decodes with surrogateescape): shown as \udcXX rather than failing the request.
            del buf[end:]
            fields = {
                k: v.encode("utf-8", "backslashreplace").decode() if isinstance(v, str) else v
                for k, v in msgspec.structs.asdict(line).items()
            }
            buf += self.render(fields)
        if len(buf) >= FLUSH_BYTES:
            self.flush_now()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.msg
            line = (
                self.render(msg) if isinstance(msg, dict) else (self.format(record) + "\n").encode()
            )
        except Exception:
            self.handleError(record)
            return
        self.append(line)

    def flush(self) -> None:
        pass

    def flush_now(self) -> None:
        data, self.buffer = self.buffer, bytearray()
        stream = self.stream
        with contextlib.suppress(ValueError, OSError):
            binary = getattr(stream, "buffer", None)
            if data:
                if binary is not None:
                    stream.flush()  # anything written as text first keeps its place
                    binary.write(data)
                else:
                    stream.write(data.decode("utf-8", "replace"))
            (binary or stream).flush()

    def close(self) -> None:
        self.flush_now()
        super().close()


class AccessLog:
    """Writes one access line per request when the access logger is enabled for INFO."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self._flusher: asyncio.Task[None] | None = None
        self._sink: BatchedStreamHandler | None = None

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, line: AccessLine) -> None:
        sink = self._sink
        if sink is not None:
            sink.append_line(line)
            return
        fields = msgspec.structs.asdict(line)
        # makeRecord + handle skips Logger._log's stack walk (findCaller), the slow part.
        self.logger.handle(
            self.logger.makeRecord(ACCESS_LOGGER, logging.INFO, "", 0, fields, (), None)
        )

    def start(self) -> None:
        logger = self.logger
        handlers = _batched_handlers()
        # The direct path only when our handler is the logger's one destination (the CLI's
        # setup); any other handler or filter gets the lines through logging instead.
        if len(handlers) == 1 and logger.handlers == handlers and not logger.filters:
            h = handlers[0]
            if not h.filters and h.level <= logging.INFO:
                self._sink = h
        if self._flusher is None and handlers:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            flush_access_log()

    async def stop(self) -> None:
        self._sink = None
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        flush_access_log()


def _batched_handlers() -> list[BatchedStreamHandler]:
    return [
        h for h in logging.getLogger(ACCESS_LOGGER).handlers if isinstance(h, BatchedStreamHandler)
    ]


def flush_access_log() -> None:
    for h in _batched_handlers():
        h.flush_now()


def setup_logging(level: str, fmt: str, *, stream: TextIO | None = None) -> None:
    """App logs to stderr, access lines to stdout; both in ``fmt`` (json or text)."""
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    # Records carry no thread or process names; skipping them saves time per record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    app = logging.StreamHandler(sys.stderr)
    app.setFormatter(formatter)
    root.addHandler(app)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    access = logging.getLogger(ACCESS_LOGGER)
    for h in list(access.handlers):
        access.removeHandler(h)
    out = BatchedStreamHandler(stream or sys.stdout, "json" if fmt == "json" else "text")
    out.setFormatter(formatter)
    access.addHandler(out)
    access.propagate = False
    # The access log is an INFO stream; --log-level warning or error turns it off.
    access.setLevel(getattr(logging, level.upper(), logging.INFO))
