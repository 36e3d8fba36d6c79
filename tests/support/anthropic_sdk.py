"""The official anthropic SDK pointed at a test gateway (no retries: every failure visible),
closed at the end of the test by the ``close_anthropic_clients`` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

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
