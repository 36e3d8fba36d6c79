"""A header-read timeout for aiohttp's server (``headerTimeoutMs``), against slowloris.

aiohttp's server has no timeout for receiving a request head: a client that
trickles header bytes holds its connection and handler task until the
keep-alive timeout, and thousands of such clients exhaust file descriptors.
This closes a connection whose request head is not complete within the limit,
counted from the connection opening or from the first byte of a later request
on a keep-alive connection. Idle keep-alive connections and slow request
bodies are not affected (the keep-alive timeout and the handlers govern those).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("chromagent_proxy")


class _GuardedHandler(RequestHandler):
    __slots__ = ("_head_deadline", "_head_timeout", "_last_payload")
    _head_deadline: asyncio.TimerHandle | None
    _head_timeout: float
    _last_payload: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._last_payload = None
        self._head_deadline = None
        self._arm()

    def _arm(self) -> None:
        self._head_deadline = self._loop.call_later(self._head_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            # A head is complete; remember its body so its bytes are not taken for a new head.
            self._disarm()
            self._last_payload = self._messages[-1][1] if self._messages else None
        elif (
            self._head_deadline is None
            and data
            and not self._upgraded
            and (self._last_payload is None or self._last_payload.is_eof())
        ):
            self._arm()  # the first bytes of the next head on a keep-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._head_deadline = None
        log.debug("closing a connection: request head not received within the header timeout")
        self.force_close()


class _GuardedServer(web.Server):
    _head_timeout: float

    def __call__(self) -> RequestHandler:
        handler = _GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler._head_timeout = self._head_timeout
        return handler


def guard_headers(server: web.Server | None, timeout_s: float) -> None:
    """Make ``server`` (an AppRunner's, after setup) enforce the header-read timeout.

    The runner builds its ``web.Server`` itself; switching the instance's class to a
    subclass that only overrides the handler factory is the narrowest hook there is."""
    assert server is not None, "call after AppRunner.setup()"
    server.__class__ = _GuardedServer
    server._head_timeout = timeout_s  # type: ignore[attr-defined]
