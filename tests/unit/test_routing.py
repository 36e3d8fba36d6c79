"""Router pieces in isolation: conditions, smooth weighted round robin, health with a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from chromagent_proxy.backends.mock import MockBackend
from chromagent_proxy.core.config import BackendConfig
from chromagent_proxy.core.config_load import build_config
from chromagent_proxy.core.errors import (
    ConfigError,
    UpstreamHTTPError,
    UpstreamUnavailable,
    upstream_http_error,
)
from chromagent_proxy.routing.router import Backend, Pool, Router
from chromagent_proxy.routing.rules import Needs, parse_condition
from chromagent_proxy.schema.openai import ChatCompletionRequest, Message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(cfg: dict[str, Any]) -> tuple[Router, Clock]:
    config = build_config(cfg, env={})
    backends = {}
    for b in config.backends:
        provider = MockBackend()
        provider.config = b
        backends[b.id] = Backend(b, provider)
    clock = Clock()
    return Router(config, backends, clock=clock), clock


def req(model: str = "m", **kw: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model=model, messages=[Message(role="user", content="hi")], **kw)


def ids(router: Router, r: ChatCompletionRequest | None = None) -> list[str]:
    return [a.backend.id for a in router.plan(r or req())]


def pool_of(*names: str, m: str = "m", **weights: int) -> dict[str, Any]:
    return {
        "backends": [
            {"id": n, "type": "mock", "modelMapping": {m: m}, "weight": weights.get(n, 1)}
            for n in names
        ],
        "failover": {"failureThreshold": 2, "cooldownMs": 1000, "maxCooldownMs": 5000},
    }


# ---------------------------------------------------------------- conditions

NEEDS = Needs(stream=False, tools=True, images=False)


@pytest.mark.parametrize(
    ("text", "model", "match"),
    [
        ("model: claude-*", "claude-3", True),
        ("model: claude-*", "gpt-4", False),
        ("model:gpt-4?", "gpt-4o", True),
        ("model: gpt-[34]o", "gpt-4o", True),
        ("model: gpt-[!34]o", "gpt-4o", False),
        ("model: a[]]b", "a]b", True),
        ("model: Claude-*", "claude-3", False),
        ("has_tools: true", "x", True),
        ("has_tools: false", "x", False),
        ("stream: false && has_images: false", "x", True),
        ("model: x* && has_tools: true && stream: false", "xy", True),
        ("  model:  x*   &&has_tools:true ", "xy", True),
    ],
)
def test_condition_matching(text: str, model: str, match: bool) -> None:
    assert parse_condition(text).matches(model, NEEDS) is match


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("model: claude-[", "never closed"),
        ("model: a[!", "never closed"),
        ("model:", "bad glob"),
        ("model: a b", "bad glob"),
        ("model: a && model: b", "appears twice"),
        ("tools: true", "unknown condition 'tools'"),
        ("has_tools: 1", "must be true or false"),
        ("has_tools", "expected 'key: value'"),
        ("", "expected 'key: value'"),
        ("model: a &&", "expected 'key: value'"),
    ],
)
def test_bad_conditions(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_condition(text)


def test_rule_errors_name_the_rule() -> None:
    cfg = pool_of("a")
    cfg["routingRules"] = [
        {"condition": "model: x", "backendId": "a"},
        {"condition": "stream: on", "backendId": "a"},
    ]
    with pytest.raises(
        ConfigError, match=r"routingRules\[1\] \('stream: on'\): condition: stream must be"
    ):
        make(cfg)


# ---------------------------------------------------------------- round robin


def members(*weights: int) -> list[Backend]:
    return [
        Backend(BackendConfig(id=chr(97 + i), type="mock", weight=w), MockBackend())
        for i, w in enumerate(weights)
    ]


def picks(pool: Pool, n: int, ready: list[bool] | None = None) -> str:
    flags = ready or [True] * len(pool.members)
    return "".join(pool.ordered(flags, rotate=True)[0].id for _ in range(n))


def test_equal_weights_rotate_strictly() -> None:
    assert picks(Pool(members(1, 1, 1)), 9) == "abcabcabc"


def test_smooth_weighted_sequence_matches_nginx() -> None:
    # nginx's documented sequence for weights 5, 1, 1.
    assert picks(Pool(members(5, 1, 1)), 7) == "aabacaa"
    assert picks(Pool(members(5, 1, 1)), 70).count("a") == 50


def test_unready_members_are_left_out_and_order_lists_the_rest() -> None:
    pool = Pool(members(1, 1, 1))
    assert picks(pool, 4, [True, False, True]) == "acac"
    order = pool.ordered([True, True, True], rotate=True)
    assert sorted(b.id for b in order) == ["a", "b", "c"]
    assert [b.id for b in pool.ordered([True, False, True], rotate=False)] == ["a", "c"]


# ---------------------------------------------------------------- plans


def test_plan_rotates_and_cuts_at_max_attempts() -> None:
    cfg = pool_of("a", "b", "c", "d")
    cfg["maxAttempts"] = 2
    router, _ = make(cfg)
    assert [ids(router) for _ in range(3)] == [["a", "b"], ["b", "c"], ["c", "d"]]


def test_plan_default_and_not_found() -> None:
    cfg = pool_of("a", "b")
    cfg["defaultBackend"] = "b"
    router, _ = make(cfg)
    assert ids(router, req("other")) == ["b"]
    assert router.plan(req("other"))[0].upstream_model == "other"
    del cfg["defaultBackend"]
    router, _ = make(cfg)
    with pytest.raises(Exception, match="not served by this gateway"):
        router.plan(req("other"))


# ---------------------------------------------------------------- health


def fail(router: Router, bid: str, status: int = 503, retry_after: str | None = None) -> None:
    b = router.backends[bid]
    router.begin(b)
    router.failed(b, upstream_http_error(bid, status, "x", retry_after=retry_after))


def test_threshold_failures_cool_down_then_half_open_probe() -> None:
    router, clock = make(pool_of("a", "b"))
    fail(router, "a")
    assert router.health["a"].until == 0  # one failure is not enough
    fail(router, "a")
    assert router.health["a"].until == clock.now + 1
    assert [ids(router) for _ in range(3)] == [["b", "a"]] * 3  # cooling: last resort only
    clock.now += 1.01
    plan = ids(router)
    assert set(plan) == {"a", "b"}
    router.begin(router.backends["a"])
    assert router.health["a"].probing
    # While the probe is in flight nobody else gets a first.
    assert ids(router)[0] == "b" and ids(router)[0] == "b"
    router.succeeded(router.backends["a"])
    assert router.health["a"].until == 0 and not router.health["a"].probing
    assert sorted(ids(router)[0] + ids(router)[0]) == ["a", "b"]


def test_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    router, clock = make(pool_of("a", "b"))
    fail(router, "a")
    fail(router, "a")
    waits = []
    for _ in range(4):
        clock.now = router.health["a"].until
        fail(router, "a")  # the probe fails
        waits.append(router.health["a"].until - clock.now)
    assert waits == [2, 4, 5, 5]


def test_retry_after_cools_down_at_once_and_is_capped() -> None:
    router, clock = make(pool_of("a", "b"))
    fail(router, "a", 429, "2.5")
    assert router.health["a"].until == clock.now + 2.5
    fail(router, "b", 503, "99999")
    assert router.health["b"].until == clock.now + 5
    # Both cooling: the one that is ready sooner comes first, rather than nothing.
    assert ids(router) == ["a", "b"]


def test_non_retryable_failure_means_alive_and_abandon_clears_probe() -> None:
    router, clock = make(pool_of("a", "b"))
    fail(router, "a")
    fail(router, "a", 400)
    assert router.health["a"].failures == 0
    fail(router, "a")
    fail(router, "a")
    clock.now += 2
    router.begin(router.backends["a"])
    assert router.health["a"].probing
    router.abandoned(router.backends["a"])
    assert not router.health["a"].probing
    assert router.health["a"].ready(clock.now)
    router.failed(router.backends["b"], UpstreamUnavailable("down"))
    assert router.health["b"].failures == 1
    router.failed(router.backends["b"], UpstreamHTTPError("bad", status=400, retryable=False))
    assert router.health["b"].failures == 0


def test_capability_filter_names_the_missing_capability() -> None:
    class NoTools(MockBackend):
        def supports_tools(self) -> bool:
            return False

    config = build_config(pool_of("a"), env={})
    b = config.backends[0]
    router = Router(config, {"a": Backend(b, NoTools())})
    tool = {"type": "function", "function": {"name": "f"}}
    import msgspec

    r = msgspec.convert(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [tool]},
        ChatCompletionRequest,
    )
    with pytest.raises(Exception, match="supports tools") as info:
        router.plan(r)
    assert getattr(info.value, "param", None) == "tools"


def test_readme_worked_example() -> None:
    """The table in the README (Routing section), with mock backends standing in for the real types."""
    cfg = {
        "defaultBackend": "openai",
        "backends": [
            {
                "id": "openai",
                "type": "mock",
                "modelMapping": {"gpt-4o": "gpt-4o", "claude-3-5-sonnet": "gpt-4o"},
            },
            {
                "id": "anthropic",
                "type": "mock",
                "modelMapping": {"claude-3-5-sonnet": "claude-3-5-sonnet-20241022"},
            },
            {"id": "vertex-claude", "type": "mock"},
            {"id": "gemini", "type": "mock"},
        ],
        "routingRules": [
            {"condition": "model: claude-* && has_tools: true", "backendId": "anthropic"},
            {"condition": "model: claude-*", "backendIds": ["anthropic", "vertex-claude"]},
            {"condition": "has_images: true", "backendId": "gemini"},
        ],
    }
    router, _ = make(cfg)
    import msgspec

    def plan(model: str, **kw: Any) -> list[tuple[str, str]]:
        body = {"model": model, "messages": [{"role": "user", "content": "x"}], **kw}
        r = msgspec.convert(body, ChatCompletionRequest)
        return [(a.backend.id, a.upstream_model) for a in router.plan(r)]

    tools = [{"type": "function", "function": {"name": "f"}}]
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    assert plan("claude-3-5-sonnet", tools=tools) == [
        ("anthropic", "claude-3-5-sonnet-20241022"),
        ("openai", "gpt-4o"),
    ]
    firsts = [plan("claude-3-5-sonnet")[0][0] for _ in range(4)]
    assert firsts == ["anthropic", "vertex-claude", "anthropic", "vertex-claude"]
    assert plan("claude-3-5-sonnet")[2] == ("openai", "gpt-4o")
    assert {p[0] for p in plan("claude-3-haiku")} == {"anthropic", "vertex-claude"}
    assert all(m == "claude-3-haiku" for _, m in plan("claude-3-haiku"))
    assert plan("gpt-4o", messages=image) == [("gemini", "gpt-4o"), ("openai", "gpt-4o")]
    assert plan("gpt-4o") == [("openai", "gpt-4o")]
    assert plan("llama3") == [("openai", "llama3")]


def test_fixed_order_plan_follows_health_changes_at_once() -> None:
    """A plan with no rotation (a primary, then a fallback) is computed once per model and
    needs; a cooldown, the probe after it, and recovery each change it on the next request."""
    cfg = {
        "backends": [
            {"id": "a", "type": "mock", "modelMapping": {"m": "up-a"}},
            {"id": "b", "type": "mock", "modelMapping": {"m": "up-b"}},
        ],
        "routingRules": [{"condition": "model: m", "backendId": "a"}],
        "failover": {"failureThreshold": 1, "cooldownMs": 1000, "maxCooldownMs": 5000},
    }
    router, clock = make(cfg)
    plans = [[(a.backend.id, a.upstream_model) for a in router.plan(req())] for _ in range(3)]
    assert plans == [[("a", "up-a"), ("b", "up-b")]] * 3
    assert ids(router, req(stream=True)) == ["a", "b"]
    fail(router, "a")
    assert ids(router) == ["b", "a"] and ids(router, req(stream=True)) == ["b", "a"]
    clock.now += 1.01
    assert ids(router) == ["a", "b"]  # cooldown over: a half-open probe goes to a
    router.begin(router.backends["a"])
    assert ids(router) == ["b", "a"]  # while the probe runs, others go first
    router.succeeded(router.backends["a"])
    assert [ids(router) for _ in range(2)] == [["a", "b"]] * 2
    # Another replica's cooldown arrives through the shared state (breaker_redis.apply
    # writes the Health directly, no failed() call here): the next plan follows it too.
    router.health["a"].until = clock.now + 5
    assert ids(router) == ["b", "a"]
