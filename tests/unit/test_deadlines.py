"""service/deadlines.py: the streams' first-byte waits on one timer per timeout value,
with asyncio.timeout's semantics (the gateway's 504s go through it: test_openai_backend,
test_failover, test_upstream_faults)."""

from __future__ import annotations

import asyncio

import pytest

from chromagent_proxy.service.deadlines import Deadlines


async def _wait(d: Deadlines, timeout: float, work: float) -> str:
    try:
        with d.start(timeout):
            await asyncio.sleep(work)
    except TimeoutError:
        return "timeout"
    return "ok"


async def test_only_overdue_waits_time_out_whatever_order_they_end_in() -> None:
    d = Deadlines()
    # Same timeout; the quick ones end before, between and after the slow ones start.
    jobs = [
        _wait(d, 0.3, 0.01),
        _wait(d, 0.3, 2.0),
        _wait(d, 0.3, 0.05),
        _wait(d, 0.3, 5.0),
        _wait(d, 0.3, 0.0),
        _wait(d, 1.5, 0.6),  # a longer timeout beside them: not cut by the 0.3 s timer
        _wait(d, 0.1, 5.0),  # a shorter one started last: its own timer
    ]
    loop = asyncio.get_running_loop()
    t = loop.time()
    got = await asyncio.gather(*jobs)
    assert got == ["ok", "timeout", "ok", "timeout", "ok", "ok", "timeout"]
    assert loop.time() - t < 1.5  # the 2 s and 5 s waits were cut, not waited out
    # Later waits on the same queue still time out (the timer re-arms after firing).
    assert await _wait(d, 0.3, 5.0) == "timeout"
    assert await _wait(d, 0.3, 0.0) == "ok"
    d.close()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    d = Deadlines()
    task = asyncio.create_task(_wait(d, 5.0, 5.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A wait that ended is never cancelled later by the timer.
    with d.start(0.05):
        pass
    await asyncio.sleep(0.2)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    d.close()


async def test_the_wait_that_timed_out_can_be_waited_for_again() -> None:
    """uncancel(): after a TimeoutError the task carries no pending cancellation."""
    d = Deadlines()
    assert await _wait(d, 0.05, 1.0) == "timeout"
    await asyncio.sleep(0.01)  # would raise CancelledError if a cancel were left pending
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    d.close()
