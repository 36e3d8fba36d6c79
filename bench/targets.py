"""The processes under test: our gateway, nginx, LiteLLM and Portkey; and /proc sampling.

Each target is started pinned to the gateway core (``taskset -c 1``) when
taskset exists, waits until its port answers, and knows how to phrase every
scenario for itself (or why it cannot).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import scenarios as sc
from bench.load import Job, scenario_job

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / ".peers"
HOST = "127.0.0.1"
UPSTREAM_PORT = 18101
PORTS = {"gateway": 18100, "nginx": 18102, "litellm": 18103, "portkey": 18104}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CORES = os.cpu_count() or 1
TASKSET = shutil.which("taskset") if CORES >= 2 else None
LOAD_CORE, TARGET_CORE = 0, 1


def pinned(cmd: list[str], core: int) -> list[str]:
    return [TASKSET, "-c", str(core), *cmd] if TASKSET else cmd


def run_with_upstreams(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Start the fake upstreams (bench.upstreams, pinned on the load core) on UPSTREAM_PORT,
    run ``main`` on uvloop when it is installed, and stop them (bench.ab, bench.chunkcost)."""
    up = subprocess.Popen(
        pinned([sys.executable, "-m", "bench.upstreams", "--port", str(UPSTREAM_PORT)], LOAD_CORE),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(UPSTREAM_PORT, up, 15)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(main())
    finally:
        up.terminate()
        up.wait(5)


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout:.0f}s")


# -- /proc -------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """pid and all its descendants (nginx workers, node helpers, uvicorn workers)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            continue
        total += int(fields[1]) * PAGE
    return total


def gateway_only(scen: sc.Scenario) -> str:
    return f"{scen.client.title()} clients: measured on this gateway only"


# -- targets -----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    version: str = ""
    skip: dict[str, str] = field(default_factory=dict)  # scenario → why not
    error: str = ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Write config files; raise RuntimeError when the target cannot run here."""

    def start(self, timeout: float = 60.0) -> None:
        self.prepare()
        log = (self.workdir / f"{self.name}.log").open("wb")
        self.proc = subprocess.Popen(
            pinned(self.command(), TARGET_CORE),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.workdir,
            start_new_session=True,
        )
        try:
            wait_port(self.port, self.proc, timeout)
        except RuntimeError as exc:
            self.stop()
            tail = (self.workdir / f"{self.name}.log").read_bytes()[-600:].decode(errors="replace")
            raise RuntimeError(f"{self.name} did not start: {exc}; log tail: {tail}") from None

    def stop(self) -> None:
        if self.proc is None:
            return
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc is not None else []

    def job(self, scen: sc.Scenario) -> Job | None:
        if scen.name in self.skip:
            return None
        return scenario_job(scen, HOST, self.port)


class Gateway(Target):
    def __init__(
        self,
        workdir: Path,
        config: Path,
        src: Path | None = None,
        overlay: dict[str, Any] | None = None,
    ) -> None:
        super().__init__("gateway", PORTS["gateway"], workdir)
        self.config_path = config
        self.overlay = overlay or {}  # top-level keys set on the config (bench.ab --tracing-b)
        self.src = src or ROOT  # a directory holding chromagent_proxy/ (bench.ab compares two)
        from chromagent_proxy import __version__
        from chromagent_proxy.backends.registry import DefaultBackendRegistry

        self.version = __version__
        self.types = DefaultBackendRegistry().types()

    def prepare(self) -> None:
        cfg: dict[str, Any] = orjson.loads(self.config_path.read_bytes())
        cfg.update(self.overlay)
        cfg["port"] = self.port
        missing = {b["type"] for b in cfg["backends"]} - set(self.types)
        cfg["backends"] = [b for b in cfg["backends"] if b["type"] in self.types]
        for b in cfg["backends"]:  # bench.ab may move the stubs to another port
            if b.get("baseUrl"):
                b["baseUrl"] = b["baseUrl"].replace(":18101", f":{UPSTREAM_PORT}")
        for scen in sc.all_scenarios():
            if scen.dialect in missing:
                self.skip[scen.name] = f"backend type '{scen.dialect}' not yet available"
        (self.workdir / "gateway.json").write_bytes(orjson.dumps(cfg, option=orjson.OPT_INDENT_2))

    def command(self) -> list[str]:
        return [sys.executable, "-m", "chromagent_proxy", "--config", "gateway.json"]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.src)
        return env


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {dir}/nginx-body;
  proxy_temp_path {dir}/nginx-proxy;
  fastcgi_temp_path {dir}/nginx-fastcgi;
  uwsgi_temp_path {dir}/nginx-uwsgi;
  scgi_temp_path {dir}/nginx-scgi;
  client_max_body_size 20m;
  client_body_buffer_size 2m;
  keepalive_requests 1000000;
  upstream fake {{ server {up}; keepalive 1024; }}
  upstream rr3 {{ server {up}; server {up}; server {up}; keepalive 1024; }}
  server {{
    listen {host}:{port} backlog=4096;
    location /v1/ {{
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
    location /rr/ {{
      proxy_pass http://rr3/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


class Nginx(Target):
    """The floor for any proxy: proxy_pass, buffering off, upstream keep-alive."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("nginx", PORTS["nginx"], workdir)
        self.binary = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else ""
        )
        for scen in sc.all_scenarios():
            if scen.dialect != "openai":
                self.skip[scen.name] = "byte relay only (no translation)"
            elif scen.client != "chat":
                self.skip[scen.name] = gateway_only(scen)

    def prepare(self) -> None:
        if not self.binary:
            raise RuntimeError("nginx is not installed and apt-get could not install it")
        out = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        self.version = out.stderr.strip().split("/")[-1]
        conf = NGINX_CONF.format(
            dir=self.workdir, host=HOST, port=self.port, up=f"{HOST}:{UPSTREAM_PORT}"
        )
        (self.workdir / "nginx.conf").write_text(conf)

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.workdir / "nginx.conf"), "-p", str(self.workdir)]

    def job(self, scen: sc.Scenario) -> Job | None:
        if scen.name in self.skip:
            return None
        path = "/rr/v1/chat/completions" if scen.backends > 1 else "/v1/chat/completions"
        return scenario_job(scen, HOST, self.port, path=path)


LITELLM_KEY = "sk-bench-0123456789abcdef"


class LiteLLM(Target):
    """LiteLLM proxy from PyPI in its own virtualenv, one worker."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("litellm", PORTS["litellm"], workdir)
        self.bin = PEERS / "litellm" / "bin"
        self.skip["vertex-anthropic-json"] = "needs Google credentials in LiteLLM"
        self.skip["vertex-anthropic-stream"] = "needs Google credentials in LiteLLM"
        for scen in sc.all_scenarios():
            if scen.client != "chat":
                self.skip[scen.name] = gateway_only(scen)

    def prepare(self) -> None:
        if not (self.bin / "litellm").exists():
            raise RuntimeError("not installed (make bench-peers installs it)")
        out = subprocess.run(
            [str(self.bin / "python"), "-c", "import importlib.metadata as m;"
             "print(m.version('litellm'))"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        self.version = out.stdout.strip()
        up = f"http://{HOST}:{UPSTREAM_PORT}"
        provider = {
            "openai": ("openai", up + "/v1"),
            "anthropic": ("anthropic", up),
            "gemini": ("gemini", up + "/v1beta"),
            "ollama": ("ollama_chat", up),
        }
        models = []
        for scen in sc.all_scenarios():
            if scen.dialect not in provider:
                continue
            kind, base = provider[scen.dialect]
            for _ in range(scen.backends):
                params = {"model": f"{kind}/{scen.upstream_model}", "api_base": base}
                params["api_key"] = "bench"
                models.append({"model_name": scen.gateway_model, "litellm_params": params})
        conf = {
            "model_list": models,
            "litellm_settings": {"telemetry": False, "drop_params": True},
            # LiteLLM refuses to start without a master key; clients send it as their key.
            "general_settings": {"master_key": LITELLM_KEY},
        }
        # JSON is valid YAML.
        (self.workdir / "litellm.yaml").write_bytes(orjson.dumps(conf, option=orjson.OPT_INDENT_2))

    def command(self) -> list[str]:
        return [
            str(self.bin / "litellm"),
            "--config",
            "litellm.yaml",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--num_workers",
            "1",
        ]

    def job(self, scen: sc.Scenario) -> Job | None:
        if scen.name in self.skip:
            return None
        auth = {"Authorization": f"Bearer {LITELLM_KEY}"}
        return scenario_job(scen, HOST, self.port, headers=auth)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", NO_DOCS="True")
        env.pop("PYTHONPATH", None)
        return env


class Portkey(Target):
    """Portkey gateway from npm, routed by x-portkey-* headers to the same stubs."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("portkey", PORTS["portkey"], workdir)
        self.pkg = PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway"
        for d in ("vertex-anthropic-json", "vertex-anthropic-stream"):
            self.skip[d] = "needs Google credentials in Portkey"
        self.skip["slow-streams-1000"] = "Portkey's streams fail here (see the errors column)"
        for scen in sc.all_scenarios():
            if scen.client != "chat":
                self.skip[scen.name] = gateway_only(scen)

    def prepare(self) -> None:
        if not (self.pkg / "build" / "start-server.js").exists():
            raise RuntimeError("not installed (make bench-peers installs it)")
        if not shutil.which("node"):
            raise RuntimeError("node is not installed")
        self.version = orjson.loads((self.pkg / "package.json").read_bytes())["version"]

    def command(self) -> list[str]:
        node = shutil.which("node") or "node"
        return [
            node,
            str(self.pkg / "build" / "start-server.js"),
            f"--port={self.port}",
            "--headless",
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["NODE_ENV"] = "production"
        return env

    def job(self, scen: sc.Scenario) -> Job | None:
        if scen.name in self.skip:
            return None
        up = f"http://{HOST}:{UPSTREAM_PORT}"
        provider, host = {
            "openai": ("openai", up + "/v1"),
            "anthropic": ("anthropic", up + "/v1"),
            "gemini": ("google", up),
            "ollama": ("ollama", up),
        }[scen.dialect]
        headers = {"x-portkey-provider": provider, "x-portkey-custom-host": host}
        if scen.backends > 1:
            one = {"provider": provider, "custom_host": host, "api_key": "bench"}
            conf = {"strategy": {"mode": "loadbalance"}, "targets": [one] * scen.backends}
            headers = {"x-portkey-config": orjson.dumps(conf).decode()}
        return scenario_job(scen, HOST, self.port, model=scen.upstream_model, headers=headers)
