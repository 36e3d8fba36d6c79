from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.upstream import FakeUpstream


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream().start()
    yield fake
    await fake.close()
