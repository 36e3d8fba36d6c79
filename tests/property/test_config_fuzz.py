"""Config fuzzing: any config is accepted or refused with one ConfigError line — never a crash.

In process: random JSON shaped like the README's config goes through
``build_config`` (with random ``GATEWAY_*`` env) and the ``GatewayServer``
constructor (backend validation, routing rules, media policy). Through the real
CLI: a sample of the same configs gives exit 0 (started, then SIGTERM) or
exit 2 with exactly one stderr line and no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chromagent_proxy import DefaultBackendRegistry, GatewayServer
from chromagent_proxy.core.config import (
    BackendConfig,
    FailoverConfig,
    GatewayConfig,
    MediaConfig,
    RateLimitConfig,
    TimeoutsConfig,
)
from chromagent_proxy.core.config_load import ENV_VARS, build_config
from chromagent_proxy.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = DefaultBackendRegistry()


def keys(struct: type[msgspec.Struct]) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(struct)]


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, 1, -1, 2, 65535, 65536, 10**20]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        ["${NOT_SET_VAR}", "${HOME}", "http://127.0.0.1:1/v1", "ftp://x", "", "*", "mock", "m"]
    ),
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def obj(
    struct: type[msgspec.Struct], **special: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """A dict using the struct's real keys (plus sometimes an unknown one) with random values."""
    names = keys(struct)
    value_for = {k: special.get(k, anything) for k in names}
    entries = st.lists(st.sampled_from(names), max_size=len(names), unique=True).flatmap(
        lambda ks: st.fixed_dictionaries({k: value_for[k] for k in ks})
    )
    unknown = st.dictionaries(st.sampled_from(["bogus", "Port", "api_key"]), anything, max_size=1)
    return st.tuples(entries, unknown, st.integers(0, 9)).map(
        lambda t: {**t[0], **t[1]} if t[2] == 0 else t[0]
    )


backend_types = st.sampled_from([*sorted(REGISTRY.types()), "gpt-magic", ""])
# Never import a random module name: only these.
modules = st.sampled_from(
    [None, "x", "no.such.module:Cls", "os:getcwd", "chromagent_proxy.backends.mock:MockBackend"]
)
backend = obj(
    BackendConfig,
    id=st.sampled_from(["a", "b", "", "m"]) | st.text(max_size=4),
    type=backend_types,
    module=modules,
    baseUrl=st.sampled_from(["http://127.0.0.1:9/v1", "https://x.invalid", "nope", ""]) | anything,
)
condition = st.sampled_from(
    [
        'model == "gpt-4o"',
        "model.startswith('claude')",
        "stream",
        "((",
        "",
        "__import__('os')",
        "tools",
    ]
) | st.text(max_size=20)
config = obj(
    GatewayConfig,
    backends=st.lists(backend, max_size=3) | anything,
    defaultBackend=st.sampled_from(["a", "b", "m", "zzz"]) | anything,
    routingRules=st.lists(
        st.fixed_dictionaries(
            {"condition": condition},
            optional={
                "backendId": st.sampled_from(["a", "b", "x"]),
                "backendIds": st.lists(st.sampled_from(["a", "b"])),
            },
        ),
        max_size=2,
    )
    | anything,
    timeouts=obj(TimeoutsConfig) | anything,
    rateLimit=obj(RateLimitConfig) | anything,
    failover=obj(FailoverConfig) | anything,
    media=obj(
        MediaConfig,
        allowCidrs=st.lists(st.sampled_from(["10.0.0.0/8", "300.1.1.1/8", "::1/128", "x"])),
    )
    | anything,
    host=st.sampled_from(["127.0.0.1", "::1", "", "no such host", 5]),
)
env = st.dictionaries(
    st.sampled_from(ENV_VARS),
    st.sampled_from(["", "0", "1", "abc", "true", "-5", "a,b", "*"]),
    max_size=3,
)


def outcome(
    cfg: Any, env_vars: dict[str, str], overrides: dict[str, Any] | None = None
) -> GatewayConfig | ConfigError:
    """What start-up decides, without binding a port: a config, or one ConfigError."""
    try:
        built = build_config(cfg, env=env_vars, overrides=overrides, known_types=REGISTRY.types())
        GatewayServer(built, REGISTRY)
    except ConfigError as exc:
        assert "\n" not in str(exc), f"multi-line config error: {exc!r}"
        assert str(exc).strip()
        return exc
    return built


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(config, env)
@example({"apiKeys": {"\n": "${NOT_SET_VAR}"}}, {})  # found: a newline key made a 2-line error
@example({"rateLimit": {"\n": None}}, {})  # found: an unknown newline key, the same
def test_random_configs_are_accepted_or_refused_with_one_config_error(
    cfg: Any, env_vars: dict[str, str]
) -> None:
    outcome(cfg, env_vars)  # any other exception fails the test with its traceback


def run_cli(path: Path, env_vars: dict[str, str]) -> tuple[int, str, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full_env.update(env_vars)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chromagent_proxy",
            "--config",
            str(path),
            "--port",
            "0",
            "--workers",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the start line, or "" when it exited
    if first:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, first + out, err


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(config, env)
def test_the_real_cli_exits_0_or_2_with_one_line(
    tmp_path_factory: Any, cfg: Any, env_vars: dict[str, str]
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.json"
    path.write_text(json.dumps(cfg))
    expected = outcome(cfg, env_vars, {"port": 0, "workers": 1})  # the flags run_cli passes
    code, out, err = run_cli(path, env_vars)
    assert "Traceback" not in err, err
    if code == 0:
        assert not isinstance(expected, ConfigError), (expected, out)
        assert "listening on" in out
    else:
        assert code == 2, (code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("chromagent-gateway: error:"), err


@pytest.mark.slow
def test_cli_fuzz_covers_both_outcomes(tmp_path: Path) -> None:
    """The CLI check above must be able to fail both ways: one config of each kind."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"backends": [{"id": "m", "type": "mock"}], "defaultBackend": "m"}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"backends": [{"id": "m", "type": "mock", "weight": 0}]}))
    assert run_cli(good, {})[0] == 0
    code, _, err = run_cli(bad, {})
    assert code == 2 and len(err.strip().splitlines()) == 1
