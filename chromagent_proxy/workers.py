"""``--workers N``: N gateway processes on one port (SO_REUSEPORT), kept alive by a supervisor.

The supervisor binds the port first (with SO_REUSEPORT, without listening) so a
port of 0 becomes a real port every worker shares and nothing else can take it
between restarts. Each worker is the ordinary single-process CLI
(``python -m chromagent_proxy ... --workers 1 --port P``) that opens its own
SO_REUSEPORT listening socket; the kernel spreads connections over them.

A worker that dies is restarted (a worker that keeps dying within a second of
starting five times in a row stops the supervisor: that is a bug, not load).
SIGTERM/SIGINT are forwarded to every worker, which drain as a single process
does; the supervisor exits 0 when they all did. SIGHUP is forwarded too: every
worker hot-reloads the config file itself (reload.py).

Rate limits must stay exact across workers: with N > 1 a ``rateLimit`` needs a
``redisUrl`` (shared state); in-memory limits would give each worker its own
budget, so the supervisor refuses to start instead (one config-error line).
Metrics are shared through snapshot files (see metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence

from .config import GatewayConfig
from .errors import ConfigError
from .metrics import SNAPSHOT_DIR_ENV

log = logging.getLogger("chromagent_proxy")

WORKER_ENV = "CHROMAGENT_WORKER_ID"
QUICK_DEATH_S = 1.0
MAX_QUICK_DEATHS = 5


def check(config: GatewayConfig) -> None:
    rl = config.rate_limit
    if config.workers > 1 and rl is not None and rl.enabled and not rl.redis_url:
        raise ConfigError(
            f"config $.workers: {config.workers} workers need rateLimit.redisUrl "
            "(GATEWAY_REDIS_URL) so rate limits are shared and exact; set it, or run 1 worker"
        )


def claim_port(host: str, port: int) -> int:
    """Make sure nothing listens on ``port`` yet; return it (a free one for 0).

    Every socket of a gateway's worker group has SO_REUSEPORT, so a second ``--workers``
    gateway (same user) could join the group and silently take a share of the traffic. A
    probe bound *without* SO_REUSEPORT fails on any port already in use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        probe.bind((host, port))
        return int(probe.getsockname()[1])
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        probe.close()


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket with SO_REUSEPORT (not yet listening)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("config $.workers: this platform has no SO_REUSEPORT; run 1 worker")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM if the supervisor dies, so none is left orphaned."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(self, argv: Sequence[str], config: GatewayConfig) -> None:
        self.argv = list(argv)
        self.config = config
        self.n = config.workers
        self.stopping = False
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.exit_code = 0

    async def _spawn(self, slot: int, port: int, env: dict[str, str]) -> asyncio.subprocess.Process:
        cmd = [sys.executable, "-m", "chromagent_proxy", *self.argv]
        cmd += ["--workers", "1", "--port", str(port)]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            env={**env, WORKER_ENV: str(slot)},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        log.info("supervisor: worker %d started (pid %d)", slot, proc.pid)
        return proc

    async def _keep(self, slot: int, port: int, env: dict[str, str]) -> None:
        quick = 0
        while not self.stopping:
            started = time.monotonic()
            proc = self.procs[slot] = await self._spawn(slot, port, env)
            rc = await proc.wait()
            if self.stopping:
                # A worker still starting when our SIGTERM arrived dies of it before its
                # handler is installed: that is the stop we asked for, not a failure.
                if rc not in (0, -signal.SIGTERM, -signal.SIGINT):
                    self.exit_code = rc if rc > 0 else 1
                return
            quick = quick + 1 if time.monotonic() - started < QUICK_DEATH_S else 0
            log.warning(
                "supervisor: worker %d (pid %d) exited with code %s; restarting", slot, proc.pid, rc
            )
            if quick >= MAX_QUICK_DEATHS:
                log.error(
                    "supervisor: worker %d died %d times right after starting; giving up",
                    slot,
                    quick,
                )
                self.exit_code = 1
                self._stop()
                return
            await asyncio.sleep(min(0.1 * quick, 1.0))

    def _hup(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    async def run(self) -> int:
        cfg = self.config
        holder = reuseport_socket(cfg.host, claim_port(cfg.host, cfg.port))
        port = holder.getsockname()[1]
        metrics_dir = tempfile.mkdtemp(prefix="chromagent-metrics-")
        env = {**os.environ, SNAPSHOT_DIR_ENV: metrics_dir}
        if not cfg.state_secret and not env.get("GATEWAY_STATE_SECRET"):
            # Reasoning state sealed by one worker must open in its siblings (core/seal.py):
            # without a configured stateSecret, the workers share one made here.
            env["GATEWAY_STATE_SECRET"] = os.urandom(32).hex()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._hup)
        host = cfg.host if cfg.host not in ("0.0.0.0", "::") else "127.0.0.1"
        log.info("supervisor: %d workers on http://%s:%d", self.n, host, port)
        try:
            await asyncio.gather(*(self._keep(i, port, env) for i in range(self.n)))
        finally:
            holder.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return self.exit_code


def supervise(argv: Sequence[str], config: GatewayConfig) -> int:
    check(config)
    return asyncio.run(Supervisor(argv, config).run())
