"""Every bad config or flag: exit 2 and one line naming the field, through the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chromagent_proxy.core.config_load import build_config
from chromagent_proxy.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "chromagent_proxy", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )


def write(tmp_path: Path, cfg: Any) -> str:
    p = tmp_path / "c.json"
    p.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return str(p)


BASE = {"backends": [{"id": "m", "type": "mock"}], "defaultBackend": "m"}
VERTEX = {"id": "v", "type": "vertex-gemini", "projectId": "p", "location": "us-central1"}


def with_(**kw: Any) -> dict[str, Any]:
    return {**BASE, **kw}


CASES: list[tuple[str, Any, dict[str, str], list[str], str]] = [
    ("malformed json", '{"port": 3000,\n  "host": }', {}, [], "line 2 column"),
    ("unknown key", with_(prot=1), {}, [], "unknown field `prot`"),
    (
        "unknown backend key",
        {"backends": [{"id": "m", "type": "mock", "apikey": "x"}]},
        {},
        [],
        "$.backends[0]",
    ),
    ("wrong type", with_(port="80"), {}, [], "$.port"),
    (
        "duplicate id",
        {"backends": [{"id": "m", "type": "mock"}, {"id": "m", "type": "mock"}]},
        {},
        [],
        "duplicate backend id 'm'",
    ),
    (
        "default names no backend",
        {**BASE, "defaultBackend": "nope"},
        {},
        [],
        "'nope' names no backend",
    ),
    (
        "unknown type",
        {"backends": [{"id": "m", "type": "gpt-magic"}]},
        {},
        [],
        "unknown backend type 'gpt-magic' (known types:",
    ),
    (
        "unset var",
        {"backends": [{"id": "m", "type": "openai", "apiKey": "${NOPE_NOT_SET_KEY}"}]},
        {},
        [],
        "${NOPE_NOT_SET_KEY} is not set",
    ),
    ("port out of range", with_(port=70000), {}, [], "$.port: 70000 is out of range"),
    ("env port not int", BASE, {"GATEWAY_PORT": "abc"}, [], "GATEWAY_PORT: expected an integer"),
    ("flag port not int", BASE, {}, ["--port", "x"], "argument --port/-p: invalid int value"),
    ("unknown flag", BASE, {}, ["--bogus"], "unrecognized arguments: --bogus"),
    ("missing file", None, {}, ["--config", "/nonexistent/c.json"], "/nonexistent/c.json"),
    ("empty config", {}, {}, [], 'no backends, so no model would be served; add one to "backends"'),
    (
        "misspelled key",
        with_(defaultBackned="m"),
        {},
        [],
        "unknown field `defaultBackned` (did you mean `defaultBackend`?)",
    ),
    (
        "misspelled backend key",
        {"backends": [{"id": "m", "type": "mock", "modelMaping": {}}]},
        {},
        [],
        "$.backends[0]: Object contains unknown field `modelMaping` (did you mean `modelMapping`?)",
    ),
    (
        "backend entry as a whole config",
        {"id": "m", "type": "mock", "modelMapping": {}},
        {},
        [],
        'put it inside "backends": [...]',
    ),
    (
        "missing credentials file",
        {"backends": [VERTEX | {"credentialsFile": "/nonexistent/sa.json"}]},
        {},
        [],
        "credentialsFile '/nonexistent/sa.json': File /nonexistent/sa.json was not found",
    ),
    (
        "unreadable credentials file",
        {"backends": [VERTEX | {"credentialsFile": "/"}]},
        {},
        [],
        "credentialsFile '/': cannot read it",
    ),
    (
        "missing ADC file",
        {"backends": [VERTEX]},
        {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/adc.json"},
        [],
        "GOOGLE_APPLICATION_CREDENTIALS file '/nonexistent/adc.json'",
    ),
]


@pytest.mark.parametrize(
    ("name", "cfg", "env", "flags", "expect"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, name: str, cfg: Any, env: dict[str, str], flags: list[str], expect: str
) -> None:
    args = (["--config", write(tmp_path, cfg)] if cfg is not None else []) + flags
    proc = run_cli(args, env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expect in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "name", ["empty config", "misspelled key", "missing credentials file", "missing ADC file"]
)
def test_check_flag_finds_the_same_problems(tmp_path: Path, name: str) -> None:
    (_, cfg, env, flags, expect) = next(c for c in CASES if c[0] == name)
    proc = run_cli(["--check", "--config", write(tmp_path, cfg), *flags], env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and expect in proc.stderr
    assert proc.stdout == ""


def test_check_flag_passes_without_binding_the_port(tmp_path: Path) -> None:
    """--check exits 0 even while another process holds the port: it never binds."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = run_cli(["--check", "--config", write(tmp_path, BASE), "--port", str(port)])
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout
        == f"chromagent-gateway: config OK: backends: m (mock); would listen on 127.0.0.1:{port}\n"
    )


def test_secret_is_not_echoed_in_config_errors(tmp_path: Path) -> None:
    cfg = {"backends": [{"id": "m", "type": "mock", "apiKey": "${SECRET_K}"}], "port": 99999}
    proc = run_cli(["--config", write(tmp_path, cfg)], {"SECRET_K": "sk-very-secret"})
    assert proc.returncode == 2
    assert "sk-very-secret" not in proc.stderr + proc.stdout


def test_precedence_flag_over_env_over_file() -> None:
    data = {"port": 1111, "host": "127.0.0.1", **BASE}
    cfg = build_config(data, env={"GATEWAY_PORT": "2222"})
    assert cfg.port == 2222
    cfg = build_config(data, env={"GATEWAY_PORT": "2222"}, overrides={"port": 3333})
    assert cfg.port == 3333
    assert build_config(data, env={}).port == 1111
    assert build_config({}, env={}).port == 3000


def test_env_overlay_for_every_documented_variable() -> None:
    env = {
        "GATEWAY_HOST": "0.0.0.0",
        "GATEWAY_CORS_ORIGIN": "https://a.example, https://b.example",
        "GATEWAY_CORS_CREDENTIALS": "true",
        "GATEWAY_RATE_LIMIT_WINDOW_MS": "1000",
        "GATEWAY_RATE_LIMIT_MAX": "5",
        "GATEWAY_TIMEOUT": "1234",
    }
    cfg = build_config(BASE, env=env)
    assert cfg.host == "0.0.0.0"
    assert cfg.cors is not None and cfg.cors.origin == ["https://a.example", "https://b.example"]
    assert cfg.cors.credentials is True
    assert cfg.rate_limit is not None and cfg.rate_limit.enabled
    assert (cfg.rate_limit.window_ms, cfg.rate_limit.max) == (1000, 5)
    assert cfg.first_byte_timeout_s == 1.234


def test_secret_interpolation() -> None:
    cfg = build_config(
        {
            "backends": [
                {"id": "o", "type": "openai", "apiKey": "${K}", "baseUrl": "http://${H}/v1"}
            ]
        },
        env={"K": "sk-1", "H": "up:1"},
    )
    assert cfg.backends[0].api_key == "sk-1"
    assert cfg.backends[0].base_url == "http://up:1/v1"


def test_later_issue_keys_are_validated_now() -> None:
    with pytest.raises(ConfigError, match=r"\$.rateLimit.windowMs"):
        build_config({**BASE, "rateLimit": {"windowMs": "soon"}}, env={})
    with pytest.raises(ConfigError, match=r"\$.cors"):
        build_config({**BASE, "cors": {"origins": "*"}}, env={})
    with pytest.raises(ConfigError, match=r"\$.routingRules\[0\]"):
        build_config({**BASE, "routingRules": [{"when": "x"}]}, env={})


def test_packaged_default_config_matches_config_dir() -> None:
    packaged = (ROOT / "chromagent_proxy" / "default_config.json").read_bytes()
    assert packaged == (ROOT / "config" / "default.json").read_bytes()


def test_version_flag() -> None:
    proc = run_cli(["--version"])
    assert proc.returncode == 0
    assert proc.stdout.strip()
