"""Error classification into the closed error_type set, and merging worker snapshots."""

from __future__ import annotations

from chromagent_proxy.ops.genai import (
    DURATION_BUCKETS,
    ERROR_TYPES,
    FROM_UPSTREAM_CLASS,
    GenAIMetrics,
    merge_into,
    request_error_type,
)
from chromagent_proxy.ops.instrument import classify
from chromagent_proxy.ops.metrics import ERROR_CLASSES


def test_request_error_type_by_status_and_upstream_failure() -> None:
    assert request_error_type(200, "") == ""
    assert request_error_type(200, "timeout") == "timeout"  # a stream that failed after its 200
    assert request_error_type(499, "upstream_server_error") == "cancelled"
    assert request_error_type(502, "connect") == "connect"
    assert request_error_type(429, "upstream_rate_limited") == "upstream_rate_limited"
    table = {
        400: "invalid_request",
        401: "unauthorized",
        404: "invalid_request",
        413: "invalid_request",
        429: "rate_limited",
        500: "internal",
        503: "unavailable",
        504: "timeout",
    }
    for status, want in table.items():
        assert request_error_type(status, "") == want, status
    assert set(table.values()) <= set(ERROR_TYPES)


def test_every_upstream_class_maps_into_the_closed_set() -> None:
    assert set(FROM_UPSTREAM_CLASS.values()) <= set(ERROR_TYPES)
    assert set(ERROR_CLASSES) | {"4xx"} == set(FROM_UPSTREAM_CLASS)
    assert classify(ValueError("x")) == "other"
    assert set(ERROR_TYPES.values()) == {"client", "gateway", "upstream", "network"}


def test_worker_snapshots_add_up() -> None:
    a, b = GenAIMetrics(), GenAIMetrics()
    for m in (a, b):
        m.providers = {"oa": "openai"}
        m.observe("chat", "oa", "gpt", "", 0.3, 0.1, (10, 5, 4, 0, 1))
    b.observe("chat", "oa", "gpt", "timeout", 20.0, None, (0, 0, 0, 0, 0))
    out: dict[str, dict[tuple[str, ...], object]] = {}
    merge_into(out, a.snapshot())
    merge_into(out, b.snapshot())
    assert out["tokens"][("chat", "openai", "oa", "gpt", "input")] == 20
    assert out["tokens"][("chat", "openai", "oa", "gpt", "reasoning")] == 2
    assert ("chat", "openai", "oa", "gpt", "cache_write") not in out["tokens"]
    ok = out["duration"][("chat", "openai", "oa", "")]
    assert isinstance(ok, list) and len(ok) == len(DURATION_BUCKETS) + 2
    assert sum(ok[:-1]) == 2 and abs(ok[-1] - 0.6) < 1e-9
    assert out["errors"] == {("oa", "network", "timeout"): 1}
    assert sum(out["ttft"][("chat", "openai", "oa")][:-1]) == 2  # type: ignore[index]
