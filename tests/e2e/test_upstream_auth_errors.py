"""An upstream 401/403 never relays its body: an upstream that echoes the rejected key
would otherwise hand the gateway's provider key to every client. The client sees the
backend and the status only, for every backend type, streamed or not.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from aiohttp import web

from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream

SECRET = "sk-PROVIDER-SECRET-0123456789"
MSG: Any = [{"role": "user", "content": "hi"}]

# backend config, the upstream's echoing error body (each provider's own envelope)
KINDS: dict[str, tuple[dict[str, Any], Any]] = {
    "openai": (
        {"type": "openai", "baseUrl": "{url}/v1"},
        {
            "error": {
                "message": f"Incorrect API key provided: {SECRET}",
                "type": "invalid_request_error",
            }
        },
    ),
    "gemini": (
        {"type": "gemini", "baseUrl": "{url}/v1beta"},
        {
            "error": {
                "code": 401,
                "message": f"API key not valid: {SECRET}",
                "status": "UNAUTHENTICATED",
            }
        },
    ),
    "anthropic": (
        {"type": "anthropic", "baseUrl": "{url}"},
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": f"bad x-api-key {SECRET}"},
        },
    ),
    "ollama": (
        {"type": "ollama", "baseUrl": "{url}"},
        {"error": f"unauthorized: {SECRET}"},
    ),
}


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("stream", [False, True])
async def test_auth_error_body_is_never_relayed(
    upstream: FakeUpstream, kind: str, status: int, stream: bool
) -> None:
    backend, body = KINDS[kind]

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    upstream.route("*", echo)
    cfg = {
        "backends": [
            {
                "id": "prov",
                **{k: v.format(url=upstream.url) for k, v in backend.items()},
                "apiKey": SECRET,
            }
        ],
        "defaultBackend": "prov",
        "maxAttempts": 1,
    }
    async with run_gateway(cfg) as gw:
        with pytest.raises(openai.APIStatusError) as exc:
            if stream:
                async for _ in await sdk(gw).chat.completions.create(
                    model="m", messages=MSG, stream=True
                ):
                    pass
            else:
                await sdk(gw).chat.completions.create(model="m", messages=MSG)
    assert upstream.received, "the upstream was called"
    assert exc.value.status_code == 502
    err = exc.value.body
    assert isinstance(err, dict)
    assert SECRET not in str(err) and SECRET not in exc.value.response.text
    assert "'prov'" in err["message"] and str(status) in err["message"]
    assert err["code"] == "upstream_auth_failed"
