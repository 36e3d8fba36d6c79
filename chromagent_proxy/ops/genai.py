"""Metrics in the OpenTelemetry GenAI semantic-convention vocabulary, next to the chromagent_* ones.

Names follow the OTel → Prometheus mapping (dots become underscores, the unit is a suffix):
``gen_ai.server.request.duration`` → ``gen_ai_server_request_duration_seconds``, with the
semantic conventions' explicit bucket boundaries. Labels are bounded: backend ids come from
the config, provider and operation names from closed sets, models are capped by
``Metrics.model_label``, error types come from the closed ``ERROR_TYPES`` below.

Like metrics.py, the request path only bumps ints and one bucket per histogram; the tables
are rows keyed by tuples so worker snapshots (JSON) merge by adding.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Bucket boundaries from the GenAI semantic conventions (gen-ai-metrics.md).
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

# gen_ai.token.type values; input includes the cached tokens (cache_read / input = hit ratio).
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")

# error.type → who caused it. A closed set: anything else is counted as "internal".
ERROR_TYPES: dict[str, str] = {
    # the client's request: fix the request
    "invalid_request": "client",  # 4xx the gateway answered (validation, unknown model, size)
    "unauthorized": "client",  # 401: missing or wrong gateway API key
    "rate_limited": "client",  # 429 from the gateway's own rate limiter
    "cancelled": "client",  # the client went away before the answer (499)
    # the gateway itself
    "internal": "gateway",  # 500: a bug or an unexpected exception
    "unavailable": "gateway",  # 503 from the gateway: draining, limiter's Redis down
    # the backend answered, with an error
    "upstream_rate_limited": "upstream",  # 429 from the backend
    "upstream_server_error": "upstream",  # 5xx from the backend
    "upstream_rejected": "upstream",  # another 4xx from the backend
    "upstream_auth": "upstream",  # the backend refused the gateway's credentials
    "upstream_protocol": "upstream",  # an answer the gateway could not read (empty stream…)
    # the way there
    "timeout": "network",  # no (complete) answer in time
    "connect": "network",  # could not connect to the backend
}
# instrument.classify() classes (chromagent_upstream_errors) → error.type.
FROM_UPSTREAM_CLASS = {
    "timeout": "timeout",
    "connect": "connect",
    "protocol": "upstream_protocol",
    "429": "upstream_rate_limited",
    "auth": "upstream_auth",
    "5xx": "upstream_server_error",
    "4xx": "upstream_rejected",
    "other": "internal",
}

# Request path → gen_ai.operation.name; a closed set. Other paths count only when they
# reached a backend (as "chat"): /v1/models, response retrieval and the like are not GenAI calls.
OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
    "/v1/responses": "chat",
    "/responses": "chat",
    "/v1/messages": "chat",
    "/v1/embeddings": "embeddings",
    "/embeddings": "embeddings",
}


def request_error_type(status: int, upstream_error_type: str) -> str:
    """error.type of a finished request ("" for a success). ``upstream_error_type``: the
    last attempt's failure, if any; a stream that failed after its 200 counts as an error."""
    if status < 400 and not upstream_error_type:
        return ""
    if status == 499:
        return "cancelled"
    return upstream_error_type or error_type_for_status(status)


def error_type_for_status(status: int) -> str:
    """error.type of a response the gateway produced without a backend error."""
    if status == 499:
        return "cancelled"
    if status == 401 or status == 403:
        return "unauthorized"
    if status == 429:
        return "rate_limited"
    if status < 500:
        return "invalid_request"
    if status == 503:
        return "unavailable"
    if status == 504:
        return "timeout"
    return "internal"


def _row(bounds: tuple[float, ...]) -> list[float]:
    return [0.0] * (len(bounds) + 2)  # per-bucket counts, +Inf, sum


class _Series:
    """The numbers of one (operation, backend): found with two dict lookups per request."""

    __slots__ = ("base", "duration", "tokens", "tpot", "ttft")

    def __init__(self, base: tuple[str, str, str]) -> None:
        self.base = base  # (operation, provider, backend)
        self.duration: dict[str, list[float]] = {}  # by error_type ("" = success)
        self.ttft = _row(TTFT_BUCKETS)
        self.tpot = _row(TPOT_BUCKETS)
        self.tokens: dict[str, list[int]] = {}  # by model: counts in TOKEN_TYPES order


class GenAIMetrics:
    """This process's GenAI numbers; ``snapshot()`` turns them into rows keyed by label values."""

    __slots__ = ("errors", "providers", "series")

    def __init__(self) -> None:
        self.providers: dict[str, str] = {}  # backend id → gen_ai.provider.name
        self.series: dict[str, dict[str, _Series]] = {}  # operation → backend → numbers
        self.errors: dict[tuple[str, str, str], int] = {}  # (backend, cause, error_type)

    def observe(
        self,
        operation: str,
        backend: str,
        model: str,
        error_type: str,
        total_s: float,
        ttft_s: float | None,
        tokens: tuple[int, int, int, int, int],
    ) -> None:
        by_backend = self.series.get(operation)
        if by_backend is None:
            by_backend = self.series[operation] = {}
        s = by_backend.get(backend)
        if s is None:
            s = by_backend[backend] = _Series(
                (operation, self.providers.get(backend, "none"), backend)
            )
        row = s.duration.get(error_type)
        if row is None:
            row = s.duration[error_type] = _row(DURATION_BUCKETS)
        row[bisect_left(DURATION_BUCKETS, total_s)] += 1
        row[-1] += total_s
        if error_type:
            ek = (backend, ERROR_TYPES.get(error_type, "gateway"), error_type)
            self.errors[ek] = self.errors.get(ek, 0) + 1
            return
        if ttft_s is not None:
            s.ttft[bisect_left(TTFT_BUCKETS, ttft_s)] += 1
            s.ttft[-1] += ttft_s
            out = tokens[1]
            if out > 1:  # semconv: time per output token after the first one
                tpot = (total_s - ttft_s) / (out - 1)
                s.tpot[bisect_left(TPOT_BUCKETS, tpot)] += 1
                s.tpot[-1] += tpot
        if tokens[0] or tokens[1]:
            counts = s.tokens.get(model)
            if counts is None:
                counts = s.tokens[model] = [0, 0, 0, 0, 0]
            for i in range(5):
                counts[i] += tokens[i]

    def snapshot(self) -> dict[str, Any]:
        """Rows ``[*label values, value]``; merge_into adds rows with the same labels."""
        out: dict[str, list[list[Any]]] = {n: [] for n in ("duration", "ttft", "tpot", "tokens")}
        for by_backend in self.series.values():
            for s in by_backend.values():
                for error_type, row in s.duration.items():
                    out["duration"].append([*s.base, error_type, row])
                if any(s.ttft):
                    out["ttft"].append([*s.base, s.ttft])
                if any(s.tpot):
                    out["tpot"].append([*s.base, s.tpot])
                for model, counts in s.tokens.items():
                    for kind, n in zip(TOKEN_TYPES, counts, strict=True):
                        if n:
                            out["tokens"].append([*s.base, model, kind, n])
        out["errors"] = [[*k, v] for k, v in self.errors.items()]
        return out


def merge_into(out: dict[str, Any], snap: dict[str, Any]) -> None:
    """Add one worker's ``GenAIMetrics.snapshot()`` (under ``snap["genai"]``) to ``out``."""
    for name in ("duration", "ttft", "tpot", "tokens", "errors"):
        table = out.setdefault(name, {})
        for row in snap.get(name, ()):
            key, v = tuple(row[:-1]), row[-1]
            cur = table.get(key)
            if cur is None:
                table[key] = list(v) if isinstance(v, list) else v
            elif isinstance(v, list):
                if len(cur) == len(v):
                    table[key] = [a + b for a, b in zip(cur, v, strict=True)]
            else:
                table[key] = cur + v
