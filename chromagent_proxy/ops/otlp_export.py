"""OTLP/HTTP export: the span queue the event loop appends to, and the thread that sends.

The loop only appends to a deque (never blocks; past ``OTEL_BSP_MAX_QUEUE_SIZE`` spans are
dropped and counted; a batch holds whole requests); a daemon thread encodes (``otlp.py``)
and POSTs a batch when ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` spans wait or every
``OTEL_BSP_SCHEDULE_DELAY`` ms, to the endpoint, headers, timeout, compression and
certificates of the standard ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque

from chromagent_proxy.ops.otlp import ClientOnly, Encoder, Item, RequestSpans

log = logging.getLogger("chromagent_proxy")

_RETRY_STATUS = (429, 502, 503, 504)


def _env(name: str, fallback: str = "", default: str = "") -> str:
    return os.environ.get(name) or (os.environ.get(fallback) if fallback else "") or default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        log.warning("%s=%r is not an integer: using %d", name, raw, default)
        return default


def endpoint() -> str:
    url = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if url:
        return url
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def headers() -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``: ``k=v,k2=v2``, values URL-encoded."""
    out: dict[str, str] = {}
    for raw in (
        os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""),
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", ""),
    ):
        for item in raw.split(","):
            k, sep, v = item.partition("=")
            if sep and k.strip():
                out[urllib.parse.unquote(k.strip()).lower()] = urllib.parse.unquote(v.strip())
    return out


def _plain(url: str) -> tuple[str, int, str] | None:
    u = urllib.parse.urlsplit(url)
    host = u.hostname
    if u.scheme != "http" or not host:
        return None
    if urllib.request.getproxies().get("http") and not urllib.request.proxy_bypass(host):
        return None
    return host, u.port or 80, (u.path or "/") + (f"?{u.query}" if u.query else "")


class Exporter:
    """Queues finished spans (from the loop) and sends batches from a daemon thread."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.url = endpoint()
        self.headers = {**headers(), "Content-Type": "application/x-protobuf"}
        timeout = _env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "10")
        try:
            self.timeout = float(timeout)  # seconds, as the Python SDK reads it
        except ValueError:
            self.timeout = 10.0
        compression = _env(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"
        )
        self.gzip = compression.strip().lower() == "gzip"
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self.ssl = self._ssl_context()
        # A plain-HTTP collector without a proxy: (host, port, path) of one kept-alive
        # connection. https and proxied collectors go through urllib.
        self._plain = _plain(self.url)
        self._conn: http.client.HTTPConnection | None = None
        self.max_queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.batch = max(1, min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self.max_queue))
        self.delay_s = _env_int("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        # Items: a failed attempt's span (SpanData) or a request's spans (RequestSpans, two
        # spans when an attempt served it). Queued spans = added - taken, each counter
        # written by one thread only (the loop adds, the export thread takes).
        self.queue: deque[tuple[Item, int]] = deque()
        self.added = 0
        self.taken = 0
        self.dropped = 0
        self.sent = 0
        self._wake = threading.Event()
        self._stop = False
        self._halt = threading.Event()  # set at shutdown: no more retry back-offs
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    @staticmethod
    def _ssl_context() -> ssl.SSLContext | None:
        ca = _env("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")
        cert = _env(
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
        )
        key = _env("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY")
        if not (ca or cert):
            return None
        ctx = ssl.create_default_context(cafile=ca or None)
        if cert:
            ctx.load_cert_chain(cert, key or None)
        return ctx

    def add(self, item: Item, spans: int) -> None:
        """From the event loop: never blocks, never does I/O. ``spans``: how many ``item``
        holds. A request's two spans past OTEL_BSP_MAX_QUEUE_SIZE: the client span is kept
        if one more fits (as when spans were queued one by one), the server span dropped."""
        queued = self.added - self.taken
        if queued + spans > self.max_queue:
            if spans == 2 and queued < self.max_queue and isinstance(item, RequestSpans):
                self.dropped += 1
                self.queue.append((ClientOnly(item), 1))
                self.added += 1
                return
            self.dropped += spans
            return
        self.queue.append((item, spans))
        self.added = added = self.added + spans
        if queued < self.batch <= added - self.taken:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            # Woken: a full batch waits (send full ones only); timed out: send what there is.
            full = self._wake.wait(self.delay_s)
            self._wake.clear()
            self._drain(full_only=full and not self._stop)
        self._drain(full_only=False)

    def _drain(self, full_only: bool) -> None:
        q, size = self.queue, self.batch
        while q and (self.added - self.taken >= size or not full_only):
            # Whole requests, up to ``size`` spans (at least one item).
            batch: list[Item] = []
            count = 0
            while q and (count + q[0][1] <= size or not batch):
                item, n = q.popleft()
                batch.append(item)
                count += n
            self.taken += count
            self._send(self.encoder.request(batch), count)

    def _send(self, body: bytes, count: int) -> None:
        if self.gzip:
            body = gzip.compress(body)
        for attempt in range(3):
            try:
                status = self._post(body)
                if 200 <= status < 300:
                    self.sent += count
                    return
                if status not in _RETRY_STATUS:
                    log.warning("trace export: the collector answered %d: %d spans dropped",
                                status, count)  # fmt: skip
                    return
                why = str(status)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                why = type(exc).__name__
            # Back off before a retry; shutdown cuts the wait short (and drops the batch).
            if attempt == 2 or self._halt.wait(0.5 * 2**attempt):
                break
        log.warning("trace export to the collector failed (%s): %d spans dropped", why, count)

    def _post(self, body: bytes) -> int:
        """One POST: the collector's HTTP status."""
        if self._plain is not None:
            return self._post_kept(body, *self._plain)
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl) as r:
                r.read()
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def _post_kept(self, body: bytes, host: str, port: int, path: str) -> int:
        """On the kept-alive connection (urllib opens one per POST, which cost about as much
        CPU as encoding the batch); one the collector closed meanwhile is reopened once."""
        for reuse in (True, False):
            conn = self._conn if reuse else None
            if conn is None:
                conn = self._conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
                reuse = False
            try:
                conn.request("POST", path, body, self.headers)
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._conn = None
                if reuse:
                    continue
                raise
            if r.will_close:
                conn.close()
                self._conn = None
            return r.status
        raise AssertionError("unreachable")

    def shutdown(self, timeout: float = 30.0) -> None:
        """Blocking (sends what is queued): call it off the event loop."""
        self._stop = True
        self._halt.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._conn is not None:
            self._conn.close()
