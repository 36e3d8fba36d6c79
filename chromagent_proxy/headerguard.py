"""Connection guards for aiohttp's server: header timeout, body timeout, connection cap,
and JSON answers for malformed HTTP.

aiohttp's server has no timeout for receiving a request head or body: a client
that trickles bytes holds its connection and handler task until the keep-alive
timeout, and a few hundred such clients exhaust file descriptors. Here:

- ``headerTimeoutMs``: a connection whose request head is not complete within
  the limit is closed, counted from the connection opening or from the first
  byte of a later request on a keep-alive connection. It only ever runs while
  no request is in flight: once a head is complete the request is served for
  as long as it takes (long answers and streams are governed by the upstream
  timeouts, never by this one). Idle keep-alive connections are not affected.
- ``bodyTimeoutMs``: the body must be complete this long after its head; if not,
  the handler's read fails with a 408 in OpenAI JSON and the connection closes.
- ``maxConnections``: past the cap a new connection's request gets a 503 in
  OpenAI JSON and the connection is closed, so the descriptors left stay usable.
- A request aiohttp cannot parse gets a 400 in OpenAI JSON and one warning line
  (at most one a second), never an error-level traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from . import codec

log = logging.getLogger("chromagent_proxy")


def _json_error(status: int, message: str, code: str, etype: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": code}}


def json_http_error(
    cls: type[web.HTTPException], message: str, code: str, etype: str = "invalid_request_error"
) -> web.HTTPException:
    """An aiohttp HTTP exception whose body is an OpenAI error (closes the connection)."""
    exc = cls(
        text=codec.dumps(_json_error(cls.status_code, message, code, etype)).decode(),
        content_type="application/json",
    )
    exc.force_close()
    return exc


class _WarnOnce:
    """At most one warning line a second for one kind of event, with a count of the rest."""

    def __init__(self) -> None:
        self._last = 0.0
        self._skipped = 0

    def warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < 1.0:
            self._skipped += 1
            return
        if self._skipped:
            msg += " (%d more since the last such line)"
            args = (*args, self._skipped)
        self._last, self._skipped = now, 0
        log.warning(msg, *args)


_MALFORMED = _WarnOnce()
_OVER_CAP = _WarnOnce()


class _GuardedHandler(RequestHandler):
    __slots__ = (
        "_body_deadline",
        "_guard",
        "_head_deadline",
        "_head_pending",
        "_last_payload",
    )
    _head_deadline: asyncio.TimerHandle | None
    _body_deadline: asyncio.TimerHandle | None
    _head_pending: bool
    _guard: _GuardedServer
    _last_payload: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._last_payload = None
        self._head_deadline = None
        self._body_deadline = None
        self._head_pending = False
        guard = self._guard
        guard.open_connections += 1
        if guard.max_connections and guard.open_connections > guard.max_connections:
            _OVER_CAP.warn(
                "refusing a connection: %d open, the cap is %d (maxConnections)",
                guard.open_connections,
                guard.max_connections,
            )
            self._request_handler = _over_capacity
        self._arm()

    def _arm(self) -> None:
        self._head_deadline = self._loop.call_later(self._guard.head_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _idle(self) -> bool:
        """No request queued or being served, and the last body fully received."""
        last = self._last_payload
        return (
            not self._request_in_progress and not self._messages and (last is None or last.is_eof())
        )

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        # Measured before feeding: these bytes start a new head only if the last body was done.
        between = self._last_payload is None or self._last_payload.is_eof()
        super().data_received(data)
        if self._request_count != count:
            # A head is complete: the header timeout stops until this request is served.
            self._disarm()
            self._head_pending = False
            payload = self._messages[-1][1] if self._messages else None
            self._last_payload = payload
            if payload is not None and not payload.is_eof():
                self._arm_body(payload)
        elif self._body_deadline is not None and self._last_payload.is_eof():
            self._body_deadline.cancel()
            self._body_deadline = None
        elif between and data and not self._upgraded and self._head_deadline is None:
            if self._idle():
                self._arm()  # the first bytes of the next head on a keep-alive connection
            else:
                self._head_pending = True  # pipelined: timed once the current request ends

    def _arm_body(self, payload: Any) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
        self._body_deadline = self._loop.call_later(
            self._guard.body_timeout, self._body_too_slow, payload
        )

    def _body_too_slow(self, payload: Any) -> None:
        self._body_deadline = None
        if payload.is_eof():
            return
        log.debug("request body not received within the body timeout")
        # The handler's read raises this; aiohttp sends it as the answer, then closes.
        payload.set_exception(
            json_http_error(
                web.HTTPRequestTimeout,
                f"The request body was not received within {self._guard.body_timeout:g} s "
                "(bodyTimeoutMs); send it faster or in a smaller request",
                "request_timeout",
            )
        )
        self._keepalive = False

    async def _handle_request(self, request: Any, start_time: Any, request_handler: Any) -> Any:
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            if self._head_pending and self._head_deadline is None and not self._messages:
                self._head_pending = False
                self._arm()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:
            return super().handle_error(request, status, exc, message)
        # A malformed request is the client's problem: one short line, no traceback.
        reason = (message or (str(exc) if exc else "bad request")).splitlines()[0][:200]
        _MALFORMED.warn(
            "malformed HTTP request from %s: %s", request.remote, reason.encode("unicode_escape")
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        resp = web.Response(
            status=400,
            body=codec.dumps(
                _json_error(
                    400,
                    f"Malformed HTTP request: {reason}",
                    "malformed_request",
                    "invalid_request_error",
                )
            ),
            content_type="application/json",
        )
        resp.force_close()
        return resp

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None
        self._guard.open_connections -= 1
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._head_deadline = None
        if not self._idle():
            return  # a request is in flight: never cut it
        log.debug("closing a connection: request head not received within the header timeout")
        self.force_close()


async def _over_capacity(request: web.BaseRequest) -> web.StreamResponse:
    resp = web.Response(
        status=503,
        body=codec.dumps(
            _json_error(
                503,
                "The gateway is at its connection limit (maxConnections); retry shortly",
                "too_many_connections",
                "api_error",
            )
        ),
        content_type="application/json",
        headers={"Retry-After": "1"},
    )
    resp.force_close()
    return resp


class _GuardedServer(web.Server):
    head_timeout: float
    body_timeout: float
    max_connections: int
    open_connections: int

    def __call__(self) -> RequestHandler:
        handler = _GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler._guard = self
        return handler


def guard_connections(
    server: web.Server | None,
    head_timeout_s: float,
    body_timeout_s: float,
    max_connections: int,
) -> None:
    """Make ``server`` (an AppRunner's, after setup) enforce the guards above.

    The runner builds its ``web.Server`` itself; switching the instance's class to a
    subclass that only overrides the handler factory is the narrowest hook there is."""
    assert server is not None, "call after AppRunner.setup()"
    server.__class__ = _GuardedServer
    guarded: _GuardedServer = server  # type: ignore[assignment]
    guarded.head_timeout = head_timeout_s
    guarded.body_timeout = body_timeout_s
    guarded.max_connections = max_connections
    guarded.open_connections = 0


def connection_cap(configured: int) -> int:
    """``maxConnections``, or with 0 (auto) three quarters of the descriptor limit: the rest
    stays for upstream connections, files and logs, so the gateway keeps answering (a 503)
    instead of failing to accept."""
    if configured:
        return configured
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 0
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 0
    return max(16, soft * 3 // 4)
