"""GoogleAuth against a fake OAuth token endpoint on loopback (no internet).

A throwaway RSA key signs the JWT grant exactly as it would for Google; the
fake endpoint checks the grant and hands out numbered tokens.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chromagent_proxy.auth.google import CLOUD_PLATFORM, GoogleAuth
from chromagent_proxy.core import codec
from chromagent_proxy.core.errors import UpstreamHTTPError
from tests.support.upstream import FakeUpstream


def write_service_account(directory: Path, token_uri: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "gateway@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path = directory / "sa.json"
    path.write_bytes(codec.dumps(info))
    return path


class TokenServer:
    """Route handler for a fake token endpoint: token-1, token-2, ... each call."""

    def __init__(self, expires_in: int = 3600, status: int = 200) -> None:
        self.expires_in = expires_in
        self.status = status
        self.grants: list[dict[str, Any]] = []
        self.threads: set[int] = set()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        form = urllib.parse.parse_qs((await request.read()).decode())
        assertion = form["assertion"][0]
        payload = assertion.split(".")[1]
        claims = codec.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        self.grants.append({"grant_type": form["grant_type"][0], "claims": claims})
        if self.status != 200:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "account disabled"},
                status=self.status,
            )
        return web.json_response(
            {
                "access_token": f"token-{len(self.grants)}",
                "expires_in": self.expires_in,
                "token_type": "Bearer",
            }
        )


async def test_service_account_token_is_fetched_cached_and_sent(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    tokens = TokenServer()
    upstream.route("/token", tokens)
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    auth = GoogleAuth(api_key=None, credentials_file=str(sa))
    assert auth.refreshable
    assert await auth.headers() == {"Authorization": "Bearer token-1"}
    assert await auth.headers() == {"Authorization": "Bearer token-1"}
    assert len(tokens.grants) == 1
    grant = tokens.grants[0]
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert grant["claims"]["scope"] == CLOUD_PLATFORM
    assert grant["claims"]["iss"] == "gateway@test-project.iam.gserviceaccount.com"


async def test_token_is_refreshed_before_it_expires(tmp_path: Path, upstream: FakeUpstream) -> None:
    # 200 s left is inside the 300 s margin: still valid, but refreshed early.
    tokens = TokenServer(expires_in=200)
    upstream.route("/token", tokens)
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    auth = GoogleAuth(api_key=None, credentials_file=str(sa))
    assert await auth.headers() == {"Authorization": "Bearer token-1"}
    assert await auth.headers() == {"Authorization": "Bearer token-2"}
    assert len(tokens.grants) == 2


async def test_refresh_runs_off_the_event_loop_and_single_flight(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    tokens = TokenServer()
    seen_threads: set[int] = set()

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return await tokens(request)

    upstream.route("/token", slow)
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    auth = GoogleAuth(api_key=None, credentials_file=str(sa))
    creds = auth._creds
    original = creds.refresh

    def spy(request: Any) -> None:
        seen_threads.add(threading.get_ident())
        original(request)

    creds.refresh = spy
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())
    results = await asyncio.gather(*(auth.headers() for _ in range(20)))
    t.cancel()
    assert {r["Authorization"] for r in results} == {"Bearer token-1"}
    assert len(tokens.grants) == 1
    assert threading.get_ident() not in seen_threads
    assert ticks >= 3  # the loop kept running while the token request was in flight


async def test_invalidate_forces_one_refresh(tmp_path: Path, upstream: FakeUpstream) -> None:
    tokens = TokenServer()
    upstream.route("/token", tokens)
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    auth = GoogleAuth(api_key=None, credentials_file=str(sa))
    assert await auth.headers() == {"Authorization": "Bearer token-1"}
    await auth.invalidate()
    assert await auth.headers() == {"Authorization": "Bearer token-2"}
    assert await auth.headers() == {"Authorization": "Bearer token-2"}
    # A 401 for a token that was already replaced does not refresh again.
    await auth.invalidate("Bearer token-1")
    assert await auth.headers() == {"Authorization": "Bearer token-2"}
    await auth.invalidate("Bearer token-2")
    assert await auth.headers() == {"Authorization": "Bearer token-3"}


async def test_static_api_key_is_a_bearer_token_and_never_refreshed() -> None:
    auth = GoogleAuth(api_key="ya29.pasted", credentials_file=None)
    assert not auth.refreshable
    await auth.invalidate()
    assert await auth.headers() == {"Authorization": "Bearer ya29.pasted"}


async def test_token_endpoint_failure_is_a_502(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.route("/token", TokenServer(status=400))
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    auth = GoogleAuth(api_key=None, credentials_file=str(sa), label="backend 'vx'")
    with pytest.raises(UpstreamHTTPError) as info:
        await auth.headers()
    assert info.value.status == 502
    assert "backend 'vx'" in info.value.message
    assert "account disabled" in info.value.message


def test_bad_credentials_file_fails_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match="credentialsFile"):
        GoogleAuth(api_key=None, credentials_file=str(missing))
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "service_account"}')
    with pytest.raises(ValueError, match="credentialsFile"):
        GoogleAuth(api_key=None, credentials_file=str(bad))


async def test_application_default_credentials_are_loaded_in_a_thread(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = TokenServer()
    upstream.route("/token", tokens)
    sa = write_service_account(tmp_path, f"{upstream.url}/token")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    # Without the env var, ADC may probe the metadata server: never at construction.
    assert GoogleAuth(api_key=None, credentials_file=None)._creds is None
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(sa))
    # With it, the file is read (checked) at construction, i.e. at start-up; no token yet.
    auth = GoogleAuth(api_key=None, credentials_file=None)
    assert auth._creds is not None and tokens.grants == []
    assert await auth.headers() == {"Authorization": "Bearer token-1"}
    assert len(tokens.grants) == 1
