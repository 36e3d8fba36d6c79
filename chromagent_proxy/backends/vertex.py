"""Vertex AI transport, shared by the gemini and anthropic backends: the location ↔ API
host rules, the model URL prefix, and the one POST that refreshes a Google token and
retries exactly once on a 401.

Vertex serves each location from its own host: ``{location}-aiplatform.googleapis.com``
for a region, ``aiplatform.{us|eu}.rep.googleapis.com`` for a multi-region, and
``aiplatform.googleapis.com`` for ``global``.
"""

from __future__ import annotations

import re
from types import TracebackType
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote, urlsplit

from multidict import CIMultiDictProxy

from chromagent_proxy.backends.base import context_headers
from chromagent_proxy.backends.upstream import ErrorParser, open_response
from chromagent_proxy.backends.upstream_read import UpstreamResponse
from chromagent_proxy.core.errors import GatewayError, UpstreamHTTPError

if TYPE_CHECKING:
    from chromagent_proxy.backends.base import BackendRuntime
    from chromagent_proxy.core.config import BackendConfig

_REGION_HOST = re.compile(r"^([a-z0-9-]+)-aiplatform\.googleapis\.com$")
_MULTI_REGION_HOST = re.compile(r"^aiplatform\.([a-z]+)\.rep\.googleapis\.com$")


def location_of(base_url: str) -> str | None:
    """``https://us-east5-aiplatform.googleapis.com/v1`` → ``us-east5``; global and multi-region
    hosts too; None for a host that names no location."""
    host = urlsplit(base_url).hostname or ""
    if host == "aiplatform.googleapis.com":
        return "global"
    m = _REGION_HOST.match(host) or _MULTI_REGION_HOST.match(host)
    return m.group(1) if m else None


def vertex_base_url(location: str) -> str:
    """The API base URL (with ``/v1``) of a Vertex location."""
    if location == "global":
        return "https://aiplatform.googleapis.com/v1"
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com/v1"
    return f"https://{location}-aiplatform.googleapis.com/v1"


def model_prefix(
    config: BackendConfig, publisher: str, default_location: str | None, errors: list[str]
) -> str:
    """``{base}/projects/{p}/locations/{l}/publishers/{publisher}/models/`` from ``baseUrl``
    and ``location`` (appending what is wrong to ``errors``). Without a baseUrl the host is
    the location's (``default_location`` when none is set); a baseUrl host that names a
    region must agree with ``location``, and one that names none needs ``location``."""
    location = config.location
    if config.base_url:
        base = config.base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            errors.append(f"baseUrl must start with http:// or https:// (got {base!r})")
        host_location = location_of(base)
        if location and host_location and location != host_location:
            errors.append(
                f"location {location!r} does not match the baseUrl host (region {host_location!r})"
            )
        location = location or host_location
        if not location:
            errors.append(
                f"location is required (it cannot be read from the baseUrl host {base!r})"
            )
    else:
        location = location or default_location
        if not location:
            errors.append(
                "set baseUrl (e.g. https://us-central1-aiplatform.googleapis.com/v1) or location"
            )
        base = vertex_base_url(location) if location else ""
    return (
        f"{base}/projects/{quote(config.project_id or '', safe='')}"
        f"/locations/{quote(location or '', safe='')}/publishers/{publisher}/models/"
    )


class TokenSource(Protocol):
    """What auth/google.py's GoogleAuth offers (and what tests substitute)."""

    @property
    def refreshable(self) -> bool: ...

    async def headers(self) -> dict[str, str]: ...

    async def invalidate(self, token: str | None = None) -> None: ...


class _Unauthorized(UpstreamHTTPError):
    """An upstream 401 seen by ``post``: the token may be stale (refresh, retry once)."""

    def __init__(self, mapped: GatewayError) -> None:
        super().__init__(mapped.message, status=mapped.status, type=mapped.type, code=mapped.code)
        self.mapped = mapped


def retrying_parser(parser: ErrorParser) -> ErrorParser:
    """``parser`` with 401s marked for ``post``'s one retry (built once per backend)."""

    def parse(
        backend_id: str, status: int, body: bytes, headers: CIMultiDictProxy[str]
    ) -> GatewayError:
        err = parser(backend_id, status, body, headers)
        return _Unauthorized(err) if status == 401 else err

    return parse


class post:  # lower case like open_response: callers write `async with post(...)`
    """``open_response`` with a Google bearer token: a 401 invalidates the token and the
    request is sent once more with a fresh one. A class, not a generator context manager
    (it is on every request's path; bench/README.md). ``parser`` must come from
    ``retrying_parser``; with ``auth`` None it is a plain POST."""

    __slots__ = ("_args", "_auth", "_inner")

    def __init__(
        self,
        runtime: BackendRuntime,
        backend_id: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
        auth: TokenSource | None,
        parser: ErrorParser,
    ) -> None:
        self._args = (runtime, backend_id, url, headers, body, parser)
        self._auth = auth
        self._inner: open_response | None = None

    async def __aenter__(self) -> UpstreamResponse:
        runtime, backend_id, url, headers, body, parser = self._args
        auth = self._auth
        for attempt in (1, 2):
            sent = headers if auth is None else {**headers, **await auth.headers()}
            inner = open_response(
                runtime,
                backend_id,
                url,
                sent,
                body,
                error_parser=parser,
                extra_headers=context_headers(),
            )
            try:
                resp = await inner.__aenter__()
            except _Unauthorized as exc:
                if attempt == 2 or auth is None or not auth.refreshable:
                    raise exc.mapped from None
                # A cached token can be revoked or expire early: a new one, one retry.
                await auth.invalidate(sent.get("Authorization"))
                continue
            self._inner = inner
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            await inner.__aexit__(exc_type, exc, tb)
