from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.chaos import FaultServer


@pytest.fixture
async def fault() -> AsyncIterator[FaultServer]:
    srv = await FaultServer().start()
    yield srv
    await srv.close()
