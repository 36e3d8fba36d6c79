"""Talking to upstreams: one POST with phase timeouts, capped reads, error mapping.

Every backend sends through ``open_response`` (or ``post_read``) so connect failures,
timeouts and HTTP errors become the same ``GatewayError`` classes everywhere. Reading
the answer (inflating, capping) is ``upstream_read.py``'s.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from chromagent_proxy.backends import h1client
from chromagent_proxy.backends.base import BackendRuntime
from chromagent_proxy.backends.upstream_read import (
    ACCEPT_ENCODING,
    UpstreamResponse,
    read_capped,
    whole_now,
)
from chromagent_proxy.core import codec
from chromagent_proxy.core.body import Body, joined
from chromagent_proxy.core.errors import (
    GatewayError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    upstream_http_error,
)

log = logging.getLogger("chromagent_proxy")

ERROR_BODY_LIMIT = 64 * 1024
_LARGE_BODY = 1024 * 1024
ErrorParser = Callable[[str, int, bytes, "CIMultiDictProxy[str]"], GatewayError]


def _origin(url: str) -> str:
    u = URL(url)
    return str(u.origin()) if u.host else "(no host)"


def _connect_reason(err: OSError) -> str:
    """Why a connection failed, from errno: aiohttp's own text carries the address."""
    if isinstance(err, socket.gaierror):
        return "its host name does not resolve"
    return os.strerror(err.errno) if err.errno else "connection failed"


def redirect_error(backend_id: str, status: int) -> UpstreamProtocolError:
    """Upstream redirects are never followed; the target (Location) is not shown either."""
    return UpstreamProtocolError(
        f"backend '{backend_id}' answered with a redirect (HTTP {status}); the gateway does not "
        "follow upstream redirects: point the backend's baseUrl at the final address"
    )


def openai_error(
    backend_id: str, status: int, body: bytes, headers: CIMultiDictProxy[str]
) -> GatewayError:
    """Parse ``{"error": {...}}`` (OpenAI and most compatible servers) or fall back to text."""
    message, etype, code, param = _error_fields(body)
    return upstream_http_error(
        backend_id,
        status,
        message or f"upstream returned HTTP {status}",
        retry_after=headers.get("Retry-After"),
        upstream_type=etype,
        upstream_code=code,
        param=param,
    )


def error_in_ok_body(backend_id: str, body: bytes) -> GatewayError | None:
    """An OpenAI-style ``{"error": ...}`` body without ``choices`` sent with HTTP 200 (some
    compatible servers and proxies do): the error it is, mapped like an HTTP error."""
    if b'"error"' not in body or b'"choices"' in body:
        return None  # the fast path: an ordinary answer
    try:
        data: Any = codec.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or "error" not in data or "choices" in data:
        return None
    err = data["error"]
    code = err.get("code") if isinstance(err, dict) else None
    status = code if isinstance(code, int) and 400 <= code <= 599 else 502
    return openai_error(backend_id, status, body, CIMultiDictProxy(CIMultiDict()))


def _error_fields(body: bytes) -> tuple[str, str | None, str | None, str | None]:
    try:
        data: Any = codec.loads(body)
    except ValueError:
        return body[:500].decode("utf-8", "replace").strip(), None, None, None
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return str(data)[:500], None, None, None
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None, None, None
    if not isinstance(err, dict):
        return str(err)[:500], None, None, None
    code = err.get("code")
    param = err.get("param")
    return (
        str(err.get("message") or err.get("detail") or "")[:2000],
        err.get("type") if isinstance(err.get("type"), str) else None,
        code if isinstance(code, str) else None,
        param if isinstance(param, str) else None,
    )


_OpenArgs = tuple[
    BackendRuntime,
    str,
    str,
    Mapping[str, str],
    Body,
    ErrorParser,
    str,
    Mapping[str, str] | None,
]


class open_response:  # lower case: it was a function, callers write `async with open_response(...)`
    """POST and wait for a 2xx response's headers within the first-byte timeout.

    The response is released to the pool when fully read, and its connection
    closed otherwise (client gone, error), so an abandoned upstream stops at once.
    A class, not ``@asynccontextmanager``: it is on every request's path and the
    generator-based manager costs more (bench/README.md).
    """

    __slots__ = ("_args", "_resp")

    def __init__(
        self,
        runtime: BackendRuntime,
        backend_id: str,
        url: str,
        headers: Mapping[str, str],
        body: Body,
        *,
        error_parser: ErrorParser = openai_error,
        hint: str = "",
        extra_headers: Mapping[str, str] | None = None,  # RequestContext.upstream_headers
    ) -> None:
        self._args: _OpenArgs | None = (
            runtime, backend_id, url, headers, body, error_parser, hint, extra_headers
        )  # fmt: skip
        self._resp: UpstreamResponse | None = None

    def __aenter__(self) -> Coroutine[Any, Any, UpstreamResponse]:
        # The coroutine itself, not one awaiting it: one frame less on every request. The
        # arguments (the body among them) are let go: a stream must not hold the body.
        args, self._args = self._args, None
        assert args is not None, "open_response is entered once"
        return _open(*args, self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        resp, self._resp = self._resp, None
        if resp is not None:
            _release(resp)


def _release(resp: UpstreamResponse) -> None:
    if resp.content.is_eof():
        resp.release()
    else:
        resp.close()


async def _open(
    runtime: BackendRuntime,
    backend_id: str,
    url: str,
    base_headers: Mapping[str, str],
    body: Body,
    error_parser: ErrorParser,
    hint: str,
    extra: Mapping[str, str] | None,
    holder: open_response | None,
) -> UpstreamResponse:
    """POST and wait for a 2xx response's head (``open_response``, ``post_read``)."""
    headers = {**base_headers, "Accept-Encoding": ACCEPT_ENCODING}
    if extra:
        headers.update(extra)
    client = runtime.client
    resp: UpstreamResponse
    # Client-facing messages name the backend, never its address (it may be internal).
    try:
        if client is not None:
            t = runtime.timeout
            resp = await client.request(
                "POST",
                url,
                headers,
                body,
                connect_timeout=t.sock_connect,
                read_timeout=t.sock_read,
                total_timeout=t.total,
                head_timeout=runtime.first_byte_timeout,
            )
        else:
            whole = joined(body)  # aiohttp takes one buffer (or a file)
            async with asyncio.timeout(runtime.first_byte_timeout):
                resp = await runtime.session.post(
                    url,
                    # Large bodies (images) as a file, which aiohttp writes in pieces: raw
                    # bytes past 1 MiB would go out in one write (and aiohttp warns about it).
                    data=whole if len(whole) < _LARGE_BODY else io.BytesIO(whole),
                    headers=headers,
                    timeout=runtime.timeout,
                    # A redirect would re-send the provider key and the prompt to another host.
                    allow_redirects=False,
                    auto_decompress=False,  # body_chunks inflates, bounded
                )
    except (aiohttp.ConnectionTimeoutError, h1client.ConnectTimeout):
        # Also a TimeoutError: name the phase that ran out (timeouts.connectMs).
        raise UpstreamTimeout(
            f"backend '{backend_id}' did not accept a connection within "
            f"{runtime.timeout.sock_connect or 0:g}s{hint}"
        ) from None
    except TimeoutError:
        raise UpstreamTimeout(
            f"backend '{backend_id}' did not answer within {runtime.first_byte_timeout:g}s"
        ) from None
    except (aiohttp.ClientConnectorError, h1client.ConnectError) as exc:
        reason = _connect_reason(exc.os_error)
        # The address goes to the operator's log only.
        log.warning("backend %s at %s is unreachable: %s", backend_id, _origin(url), reason)
        raise UpstreamUnavailable(
            f"backend '{backend_id}' is unreachable: {reason}{hint}"
        ) from None
    except (aiohttp.ClientError, h1client.ClientError) as exc:
        raise UpstreamUnavailable(
            f"backend '{backend_id}' failed: {exc.__class__.__name__}{hint}"
        ) from None
    if resp.status >= 400:
        try:
            data = await read_capped(resp, ERROR_BODY_LIMIT, backend_id)
            raise error_parser(backend_id, resp.status, data, resp.headers)
        finally:
            _release(resp)
    if resp.status >= 300:
        resp.close()
        raise redirect_error(backend_id, resp.status)
    if holder is not None:
        holder._resp = resp
    return resp


async def post_read(
    runtime: BackendRuntime,
    backend_id: str,
    url: str,
    headers: Mapping[str, str],
    body: Body,
    limit: int,
    *,
    error_parser: ErrorParser = openai_error,
    hint: str = "",
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """``open_response`` and ``read_capped`` in one coroutine: the whole answer of a request
    that is not a stream (its hot path: no context manager, no frame per step)."""
    resp = await _open(
        runtime, backend_id, url, headers, body, error_parser, hint, extra_headers, None
    )
    try:
        data = whole_now(resp, limit, backend_id)
        return data if data is not None else await read_capped(resp, limit, backend_id)
    finally:
        _release(resp)
