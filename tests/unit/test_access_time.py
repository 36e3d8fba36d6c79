"""The access line's time fields: ``time`` and the millisecond durations keep the values the
slower formatting gave (``strftime`` + ``:03d``, ``round(x * 1000, 3)``; bench/README.md)."""

from __future__ import annotations

import random
import time

from chromagent_proxy.ops.accesslog import iso_time, millis


def test_iso_time_has_the_milliseconds_of_the_timestamp() -> None:
    base = 1_765_000_000  # a whole second
    for ms in (0, 1, 9, 10, 99, 100, 500, 998, 999):
        ts = base + ms / 1000 + 0.0001
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base)) + f".{ms:03d}Z"
        assert iso_time(ts) == expected
    # The largest fraction below one second a timestamp of today can hold stays in its second.
    assert iso_time(base + 0.9999998).endswith(":40.999Z")


def test_millis_is_the_duration_in_ms_to_three_decimals() -> None:
    rng = random.Random(20)
    # Measured durations are arbitrary doubles: the same value as round(x * 1000, 3).
    for s in [rng.random() * rng.choice((0.001, 1.0, 100.0, 10_000.0)) for _ in range(20_000)]:
        assert millis(s) == round(s * 1000, 3), s
    # At an exact tie (half a microsecond) it rounds up where round() may round to even.
    for s in (0.0, 0.0000004, 0.0000005, 0.001, 0.0012345, 1.5, 59.9999996):
        assert abs(millis(s) - s * 1000) <= 0.0005 + 1e-9, s
        assert abs(millis(s) * 1000 - round(millis(s) * 1000)) < 1e-6, s  # 3 decimals
