from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

# Every test that opens anthropic SDK clients gets them closed in its own event loop.
from tests.support.anthropic_sdk import close_anthropic_clients  # noqa: F401
from tests.support.upstream import FakeUpstream


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Any blocking call (file, socket, sleep, lock...) made on the event loop from the
    gateway's own code fails the test, as in aiohttp's suite. Test code may block (it plays
    clients and operators); only frames in chromagent_proxy are scanned."""
    with blockbuster_ctx("chromagent_proxy") as bb:
        for fn in bb.functions.values():
            # Building the server (config, credentials files, custom backend modules) happens
            # before the port is bound: nothing is being served that a pause could delay.
            fn.can_block_in("chromagent_proxy/service/server.py", "__init__")
            # Credentials files are read when a backend is built (the same start-up step).
            fn.can_block_in("chromagent_proxy/auth/google.py", "__init__")
            # The tracer provider is built with the edge (start-up, before serving).
            fn.can_block_in("chromagent_proxy/ops/tracing.py", "build")
        # Queuing a span may wake the export thread (Event.set holds its condition's lock
        # for a notify; the export itself runs in that thread): not I/O on the loop.
        for name in ("threading.Lock.acquire", "threading.Lock.acquire_lock"):
            bb.functions[name].can_block_in("chromagent_proxy/ops/otlp_export.py", "add")
        yield bb


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream().start()
    yield fake
    await fake.close()
