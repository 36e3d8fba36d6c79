"""Rendering merged metrics (see Metrics.merged) for a scrape: Prometheus text or JSON.

The numbers become prometheus-client metric families only here, at scrape time;
the request path never touches prometheus-client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from chromagent_proxy.ops.genai import DURATION_BUCKETS, TPOT_BUCKETS
from chromagent_proxy.ops.genai import TTFT_BUCKETS as GENAI_TTFT_BUCKETS
from chromagent_proxy.ops.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS, TTFT_BUCKETS

# Label names of the GenAI tables' key columns (genai.GenAIMetrics).
_GENAI = ["gen_ai_operation_name", "gen_ai_provider_name", "backend"]


def render_text(merged: dict[str, Any]) -> bytes:
    """Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(merged))
    return bytes(generate_latest(registry))


def render_json(merged: dict[str, Any]) -> bytes:
    """``{family name: {type, help, samples: [{name, labels, value}]}}``."""
    out: dict[str, Any] = {}
    for fam in families(merged):
        out[fam.name] = {
            "type": fam.type,
            "help": fam.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in fam.samples
            ],
        }
    return orjson.dumps(out)


def _counter_family(
    name: str, doc: str, labels: list[str], table: dict[tuple[str, ...], int]
) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=labels)
    for key, v in sorted(table.items()):
        fam.add_metric(list(key), v)
    return fam


def _hist_family(
    name: str, doc: str, label: str | None, table: dict[str, list[float]], bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=[label] if label else [])
    for key, values in sorted(table.items()):
        if not values:
            continue
        counts, total = values[:-1], values[-1]
        cumulative, acc = [], 0.0
        for bound, c in zip((*[repr(b) for b in bounds], "+Inf"), counts, strict=True):
            acc += c
            cumulative.append((bound, acc))
        fam.add_metric([key] if label else [], cumulative, total)
    return fam


def _rows_hist_family(
    name: str,
    doc: str,
    labels: list[str],
    table: dict[tuple[str, ...], list[float]],
    bounds: tuple[float, ...],
) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=labels)
    edges = (*[repr(b) for b in bounds], "+Inf")
    for key, values in sorted(table.items()):
        acc, cumulative = 0.0, []
        for bound, c in zip(edges, values[:-1], strict=True):
            acc += c
            cumulative.append((bound, acc))
        fam.add_metric(list(key), cumulative, values[-1])
    return fam


def genai_families(g: dict[str, Any]) -> Iterator[Metric]:
    yield _rows_hist_family(
        "gen_ai_server_request_duration_seconds",
        "gen_ai.server.request.duration: time from request received to response finished; "
        "error_type is set on failures.",
        [*_GENAI, "error_type"],
        g.get("duration", {}),
        DURATION_BUCKETS,
    )
    yield _rows_hist_family(
        "gen_ai_server_time_to_first_token_seconds",
        "gen_ai.server.time_to_first_token: successful streams, request received to first chunk.",
        _GENAI,
        g.get("ttft", {}),
        GENAI_TTFT_BUCKETS,
    )
    yield _rows_hist_family(
        "gen_ai_server_time_per_output_token_seconds",
        "gen_ai.server.time_per_output_token: successful streams with usage, time after the "
        "first chunk per output token after the first.",
        _GENAI,
        g.get("tpot", {}),
        TPOT_BUCKETS,
    )
    yield _counter_family(
        "gen_ai_tokens",
        "Tokens from backends' usage by gen_ai_token_type: input (cached included), output "
        "(reasoning included), cache_read, cache_write, reasoning.",
        [*_GENAI, "gen_ai_request_model", "gen_ai_token_type"],
        g.get("tokens", {}),
    )
    yield _counter_family(
        "chromagent_errors",
        "Failed requests by cause (client, gateway, upstream, network) and error_type.",
        ["backend", "cause", "error_type"],
        g.get("errors", {}),
    )


def families(m: dict[str, Any]) -> Iterator[Metric]:
    yield _counter_family(
        "chromagent_requests",
        "Requests answered, by backend, client model and HTTP status.",
        ["backend", "model", "status"],
        m["requests"],
    )
    yield _hist_family(
        "chromagent_request_duration_seconds",
        "Total time from request received to response finished (streams: to the last byte).",
        "backend",
        m["latency"],
        LATENCY_BUCKETS,
    )
    yield _hist_family(
        "chromagent_time_to_first_token_seconds",
        "Streaming requests: time from request received to the first chunk from the backend.",
        "backend",
        m["ttft"],
        TTFT_BUCKETS,
    )
    yield _hist_family(
        "chromagent_gateway_overhead_seconds",
        "Time the gateway itself spent on a request (total, or time to first chunk, minus the "
        "time spent waiting on backends).",
        None,
        {"": m["overhead"]} if m["overhead"] else {},
        OVERHEAD_BUCKETS,
    )
    yield _counter_family(
        "chromagent_tokens",
        "Tokens reported by backends' usage, by direction (in = prompt, out = completion).",
        ["backend", "model", "direction"],
        m["tokens"],
    )
    yield _counter_family(
        "chromagent_upstream_errors",
        "Failed backend calls by class: timeout, 429, 5xx, connect, protocol, auth, other.",
        ["backend", "class"],
        m["upstream_errors"],
    )
    yield GaugeMetricFamily(
        "chromagent_active_streams", "Streaming responses open right now.", m["active_streams"]
    )
    yield GaugeMetricFamily(
        "chromagent_inflight_requests",
        "Requests being handled right now (streams included).",
        m.get("inflight", 0),
    )
    cooling = GaugeMetricFamily(
        "chromagent_backend_cooling",
        "Per backend: worker processes routing around it right now (0 = healthy everywhere).",
        labels=["backend"],
    )
    for backend, n in sorted(m.get("cooling", {}).items()):
        cooling.add_metric([backend], n)
    yield cooling
    yield CounterMetricFamily(
        "chromagent_rate_limited",
        "Requests refused with 429 by the rate limiter.",
        m["rate_limited"],
    )
    yield CounterMetricFamily(
        "chromagent_auth_failures",
        "Requests refused with 401 (missing or wrong gateway API key).",
        m["auth_failures"],
    )
    yield CounterMetricFamily(
        "chromagent_failovers",
        "Times a request moved on to another backend after a retryable failure.",
        m["failovers"],
    )
    yield from genai_families(m.get("genai", {}))
    info = GaugeMetricFamily(
        "chromagent_config_info",
        "The config version (a hash) each live worker serves; one series per version.",
        labels=["version"],
    )
    for version in sorted(m.get("config_versions", ())):
        info.add_metric([version], 1)
    yield info
    if m.get("breaker_redis_up") is not None:
        yield GaugeMetricFamily(
            "chromagent_breaker_redis_up",
            "1 while backend health is shared through Redis; 0 while each replica uses its "
            "local breaker (Redis unreachable).",
            m["breaker_redis_up"],
        )
        yield CounterMetricFamily(
            "chromagent_breaker_redis_outages",
            "Times Redis became unreachable for the shared backend health.",
            m["breaker_redis_outages"],
        )


class _Collector:
    def __init__(self, merged: dict[str, Any]) -> None:
        self._merged = merged

    def collect(self) -> Iterator[Metric]:
        return families(self._merged)
