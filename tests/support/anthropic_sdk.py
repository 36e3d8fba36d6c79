"""The official anthropic SDK pointed at a test gateway (no retries: every failure visible),
closed at the end of the test by the ``close_anthropic_clients`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from tests.support.upstream import FakeUpstream

_open: list[anthropic.AsyncAnthropic] = []


def anthropic_client(gw: Any, **kw: Any) -> anthropic.AsyncAnthropic:
    kw.setdefault("api_key", "client-key")
    c = anthropic.AsyncAnthropic(base_url=gw.url, max_retries=0, **kw)
    _open.append(c)
    return c


@pytest.fixture(autouse=True)
async def close_anthropic_clients() -> AsyncIterator[None]:
    yield
    while _open:
        await _open.pop().close()


# Claude backends for the Messages tests: client model name → Anthropic / Vertex model ids.
MODEL = "claude-sonnet-4-5"
AMODEL = "claude-sonnet-4-5-20250929"
VMODEL = "claude-sonnet-4-5@20250929"
VBASE = "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/"
USAGE = {
    "input_tokens": 2100,
    "cache_creation_input_tokens": 500,
    "cache_read_input_tokens": 20000,
    "output_tokens": 80,
}


def anthropic_cfg(up: FakeUpstream, **backend: Any) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "anth",
                "type": "anthropic",
                "baseUrl": up.url,
                "apiKey": "sk-ant-upstream",
                "modelMapping": {MODEL: AMODEL},
                **backend,
            }
        ],
        "defaultBackend": "anth",
    }


def vertex_cfg(up: FakeUpstream, **backend: Any) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "vx",
                "type": "vertex-anthropic",
                "baseUrl": f"{up.url}/v1",
                "projectId": "proj-1",
                "location": "us-east5",
                "apiKey": "ya29.pasted-token",
                "modelMapping": {MODEL: VMODEL},
                **backend,
            }
        ],
        "defaultBackend": "vx",
    }
