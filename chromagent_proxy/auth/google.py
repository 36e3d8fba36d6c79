"""Google OAuth access tokens for Vertex AI, without blocking the event loop.

google-auth is synchronous; its refresh (a JWT grant against the service
account's ``token_uri``, or a metadata-server call for ADC) runs in a worker
thread through ``asyncio.to_thread``, one refresh at a time per credential
(an ``asyncio.Lock``), ``REFRESH_MARGIN`` seconds before expiry so requests
never race the expiry (providers.md §2.4).

The HTTP transport google-auth uses is a small stdlib ``urllib`` adapter:
google-auth's own ``transport.requests`` needs the ``requests`` package, which
this project does not depend on, and the adapter only ever runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import google.auth
import google.auth.exceptions
import google.auth.transport

from chromagent_proxy.core.errors import UpstreamHTTPError

# Application Default Credentials read this file first (google.auth.default).
ADC_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# Refresh this long before expiry (beyond google-auth's own 225 s threshold).
REFRESH_MARGIN = 300.0
_TOKEN_TIMEOUT = 30.0


class _Response(google.auth.transport.Response):
    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self._status = status
        self._headers = dict(headers)
        self._data = data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Token requests carry credentials: a redirect is answered as the 3xx it is, never followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrllibTransport(google.auth.transport.Request):
    """google-auth's transport interface over ``urllib.request`` (blocking; threads only)."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        req = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
        try:
            with self._opener.open(req, timeout=timeout or _TOKEN_TIMEOUT) as resp:
                return _Response(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return _Response(exc.code, dict(exc.headers.items()), exc.read())
        except (OSError, ValueError) as exc:
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"{url}: {exc}"
            ) from exc


class GoogleAuth:
    """The ``Authorization`` header for one backend's Google credentials.

    ``api_key`` (a pasted access token) is used as is; else ``credentials_file``
    (service-account or any google-auth JSON); else Application Default
    Credentials. A bad credentials file raises ``ValueError`` at construction
    (so start-up fails with a config error, not the first request).
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        credentials_file: str | None,
        scopes: Sequence[str] = (CLOUD_PLATFORM,),
        label: str = "Google credentials",
        refresh_margin: float = REFRESH_MARGIN,
    ) -> None:
        self._api_key = api_key
        self._file = credentials_file
        self._scopes = list(scopes)
        self._label = label
        self._margin = refresh_margin
        self._creds: Any = None
        self._lock = asyncio.Lock()
        self._transport = UrllibTransport()
        self._stale = False
        self.refresh_count = 0
        if api_key is None and credentials_file:
            self._creds = self._load_file(credentials_file)
        elif api_key is None and os.environ.get(ADC_ENV):
            # The file Application Default Credentials would read first: checked now, so a
            # missing or broken one stops start-up instead of failing the first request.
            self._creds = self._load_file(os.environ[ADC_ENV], f"{ADC_ENV} file")

    @property
    def refreshable(self) -> bool:
        return self._api_key is None

    def _load_file(self, path: str, what: str = "credentialsFile") -> Any:
        try:
            creds, _project = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
                path, scopes=self._scopes
            )
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ValueError(f"{what} {path!r}: {exc}") from None
        except OSError as exc:  # unreadable (permissions, a directory)
            raise ValueError(f"{what} {path!r}: cannot read it: {exc.strerror or exc}") from None
        return creds

    def _load_default(self) -> Any:
        # May probe the GCE metadata server: only ever called in a thread.
        creds, _project = google.auth.default(scopes=self._scopes)
        return creds

    def _fresh(self) -> bool:
        creds = self._creds
        if creds is None or self._stale or not creds.token:
            return False
        expiry: datetime | None = creds.expiry
        if expiry is None:
            return True
        # google-auth keeps expiry as a naive UTC datetime.
        now = datetime.now(UTC).replace(tzinfo=None)
        return (expiry - now).total_seconds() > self._margin

    def _bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._creds.token}"}

    async def headers(self) -> dict[str, str]:
        if self._api_key is not None:
            return {"Authorization": f"Bearer {self._api_key}"}
        if self._fresh():
            return self._bearer()
        async with self._lock:  # single flight: waiters reuse the token just fetched
            if not self._fresh():
                await self._refresh()
        return self._bearer()

    async def _refresh(self) -> None:
        try:
            if self._creds is None:
                self._creds = await asyncio.to_thread(self._load_default)
            await asyncio.to_thread(self._creds.refresh, self._transport)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise UpstreamHTTPError(
                f"could not get a Google access token from {self._label}: {exc}",
                status=502,
                code="upstream_auth_failed",
                retryable=True,
            ) from None
        self._stale = False
        self.refresh_count += 1

    async def invalidate(self, token: str | None = None) -> None:
        """After an upstream 401: make the next ``headers()`` fetch a new token.

        ``token`` (optional) is the bearer value that was rejected; if the
        cached token has changed since, another request already refreshed it.
        """
        if self._api_key is not None or self._creds is None:
            return
        if token is not None and token.removeprefix("Bearer ") != self._creds.token:
            return
        self._stale = True
