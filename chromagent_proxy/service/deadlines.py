"""Deadlines for many short waits with the same timeout, on one timer per timeout value.

``asyncio.timeout`` arms and cancels a loop timer for every use (≈ 5 µs, bench/README.md,
issue 20); the stream path waits for every stream's first part under the same
first-byte timeout. Waits started with one timeout end in the order they start, so they
queue in a deque: starting one appends (and drops finished ones from the front),
ending one marks it done, and one timer, armed at the front's deadline, cancels what is
overdue when it fires and re-arms at the next live wait. Semantics are
``asyncio.timeout``'s: the block's ``CancelledError`` becomes ``TimeoutError`` only when
this deadline caused it (a cancellation from elsewhere still propagates).
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import Any


class Wait:
    """One wait: a context manager (``with deadlines.start(t):``), not async."""

    __slots__ = ("at", "cancelling", "done", "fired", "task")

    def __init__(self, at: float, task: asyncio.Task[Any]) -> None:
        self.at = at
        self.task: asyncio.Task[Any] | None = task
        self.cancelling = task.cancelling()
        self.done = False
        self.fired = False

    def __enter__(self) -> Wait:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.done = True
        task, self.task = self.task, None
        # uncancel() whenever this deadline cancelled (asyncio.timeout does the same).
        if (
            self.fired
            and task is not None
            and task.uncancel() <= self.cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc


class _Queue:
    __slots__ = ("loop", "timeout", "timer", "waits")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.waits: deque[Wait] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def fire(self) -> None:
        self.timer = None
        waits = self.waits
        # call_at may fire up to the clock's resolution early: allow for it.
        now = self.loop.time() + 0.001
        while waits:
            w = waits[0]
            if not w.done:
                if w.at > now:
                    break
                w.done = w.fired = True
                if w.task is not None:
                    w.task.cancel()
            waits.popleft()
        if waits:
            self.timer = self.loop.call_at(waits[0].at, self.fire)


class Deadlines:
    """The waits of one event loop, one queue (and at most one timer) per timeout value."""

    def __init__(self) -> None:
        self._queues: dict[float, _Queue] = {}

    def start(self, timeout: float) -> Wait:
        """A wait of ``timeout`` seconds for the current task, from now."""
        q = self._queues.get(timeout)
        if q is None:
            if len(self._queues) >= 64:  # timeouts change only on reload: keep the live ones
                for t, old in list(self._queues.items()):
                    if not old.waits:
                        del self._queues[t]
            q = self._queues[timeout] = _Queue(asyncio.get_running_loop(), timeout)
        task = asyncio.current_task()
        assert task is not None
        w = Wait(q.loop.time() + timeout, task)
        waits = q.waits
        while waits and waits[0].done:
            waits.popleft()
        waits.append(w)
        if q.timer is None:
            q.timer = q.loop.call_at(waits[0].at, q.fire)
        return w

    def close(self) -> None:
        for q in self._queues.values():
            if q.timer is not None:
                q.timer.cancel()
                q.timer = None
        self._queues.clear()
