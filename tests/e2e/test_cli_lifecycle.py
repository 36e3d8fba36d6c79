"""The real CLI: prints one line with address and backends, serves, exits 0 on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "chromagent_proxy", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"listening on (http://\S+) with backends: (.*)$", line)
    assert m, (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
    start.backends = m.group(2)  # type: ignore[attr-defined]
    return proc, m.group(1)


def finish(proc: subprocess.Popen[str]) -> int:
    """Wait for the exit, reading and closing the pipes (an open pipe is a leaked file)."""
    proc.communicate(timeout=15)
    return proc.returncode


def post(url: str, body: dict[str, object]) -> dict[str, object]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_default_config_serves_echo_and_exits_cleanly(sig: signal.Signals) -> None:
    proc, url = start(["--port", "0", "--log-level", "warning"])
    try:
        answer = post(
            f"{url}/v1/chat/completions",
            {"model": "echo", "messages": [{"role": "user", "content": "hello gateway"}]},
        )
        assert answer["choices"][0]["message"]["content"] == "hello gateway"  # type: ignore[index]
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "ok"
    finally:
        proc.send_signal(sig)
        assert finish(proc) == 0


def test_flags_override_env_and_start_line_lists_backends(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"port": 1, "backends": [{"id": "echo1", "type": "mock"}]}))
    proc, url = start(
        ["--config", str(cfg), "--port", "0", "--host", "127.0.0.1"], env={"GATEWAY_PORT": "2"}
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith((":1", ":2"))
        assert start.backends == "echo1 (mock)"  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        assert finish(proc) == 0


def test_all_interfaces_start_line_says_so() -> None:
    proc, url = start(["--host", "0.0.0.0", "--port", "0"])
    try:
        port = url.rsplit(":", 1)[1]
        assert url == f"http://0.0.0.0:{port}"
        assert start.backends.endswith(  # type: ignore[attr-defined]
            f"(all interfaces; from this machine: http://127.0.0.1:{port})"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        assert finish(proc) == 0


def test_console_script_takes_the_same_flags() -> None:
    script = Path(sys.executable).with_name("chromagent-gateway")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0 and proc.stdout.strip()
    proc = subprocess.run(
        [str(script), "--port", "nope"], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 2


def test_make_run_answers_the_readme_curl_examples() -> None:
    """`make run` (as the README says) serves the README's curl example, stream and not."""
    proc = subprocess.Popen(
        ["make", "-s", "run", "ARGS=--port 0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        # make may first (re)install into .venv when pyproject.toml changed: its lines come first.
        m = None
        for line in proc.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                break
        assert m, "make run exited without a start line"
        body: dict[str, object] = {
            "model": "echo",
            "messages": [{"role": "user", "content": "Hello, gateway!"}],
        }
        answer = post(f"{m.group(1)}/v1/chat/completions", body)
        assert answer["choices"][0]["message"]["content"] == "Hello, gateway!"  # type: ignore[index]
        req = urllib.request.Request(
            f"{m.group(1)}/v1/chat/completions",
            data=json.dumps({**body, "stream": True}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            events = [ln for ln in resp.read().decode().split("\n\n") if ln]
        assert events[-1] == "data: [DONE]"
        text = "".join(
            json.loads(e[6:])["choices"][0]["delta"].get("content", "")
            for e in events[:-1]
            if json.loads(e[6:])["choices"]
        )
        assert text == "Hello, gateway!"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        finish(proc)
