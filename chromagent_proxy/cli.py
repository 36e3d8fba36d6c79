"""Command line: flags > GATEWAY_* env > config file > defaults. Exit 2 on any config error."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib import resources
from typing import Any, NoReturn

from chromagent_proxy.backends.registry import DefaultBackendRegistry
from chromagent_proxy.core.allocator import keep_freed_memory
from chromagent_proxy.core.config import GatewayConfig
from chromagent_proxy.core.config_load import build_config, read_json
from chromagent_proxy.core.errors import ConfigError

log = logging.getLogger("chromagent_proxy")

EXIT_CONFIG = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other configuration error.
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="chromagent-gateway",
        description="OpenAI-compatible LLM gateway. Flags override GATEWAY_* env vars, "
        "which override the config file.",
    )
    p.add_argument(
        "--config",
        "-c",
        help="path to a JSON config file (default: the packaged "
        "default config, or $GATEWAY_CONFIG)",
    )
    p.add_argument("--port", "-p", type=int, help="port to listen on (0 picks a free port)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        choices=["json", "text"],
        help="json: one JSON object per line (default); text: for terminals",
    )
    p.add_argument(
        "--workers", type=int, help="number of worker processes sharing the port (SO_REUSEPORT)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config (backends, credentials files, rules) and exit 0, or 2 with "
        "one line naming the problem, without binding a port",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def load(
    argv: Sequence[str] | None, registry: DefaultBackendRegistry
) -> tuple[GatewayConfig, bool]:
    """The checked config, and whether only a check (--check) was asked for."""
    args = _parser().parse_args(argv)
    if args.version:
        from chromagent_proxy import __version__

        print(__version__)
        raise SystemExit(0)
    path = args.config or os.environ.get("GATEWAY_CONFIG")
    if path:
        data = read_json(path)
    else:
        text = resources.files("chromagent_proxy").joinpath("default_config.json").read_bytes()
        import orjson

        data = orjson.loads(text)
    overrides: dict[str, Any] = {
        "port": args.port,
        "host": args.host,
        "logLevel": args.log_level,
        "logFormat": args.log_format,
        "workers": args.workers,
    }
    config = build_config(data, env=os.environ, overrides=overrides, known_types=registry.types())
    if not config.backends:
        # Refused rather than warned about: such a gateway answers 404 to every request.
        raise ConfigError(
            f"config {path or '(packaged default)'}: no backends, so no model would be served; "
            'add one to "backends", e.g. {"id": "mock", "type": "mock"} (see README, Backends)'
        )
    return config, bool(args.check)


def check(config: GatewayConfig, registry: DefaultBackendRegistry) -> str:
    """Everything start-up checks before binding (backends, credentials files, media, rules,
    edge), without binding; the one line to print when it passes."""
    from chromagent_proxy.service.server import GatewayServer

    server = GatewayServer(config, registry)
    names = ", ".join(f"{b.id} ({b.config.type})" for b in server.backends.values())
    return f"chromagent-gateway: config OK: backends: {names}; would listen on {config.host}:{config.port}"


def setup_logging(level: str, fmt: str = "text") -> None:
    """App log to stderr, one access line per request to stdout (accesslog.py)."""
    from chromagent_proxy.ops.accesslog import setup_logging as setup

    setup(level, fmt)


async def serve(
    config: GatewayConfig, registry: DefaultBackendRegistry, argv: Sequence[str] | None = None
) -> None:
    from chromagent_proxy.ops.workers import WORKER_ENV, reuseport_socket
    from chromagent_proxy.service.reload import Reloader
    from chromagent_proxy.service.server import GatewayServer

    # A worker under --workers N opens its own SO_REUSEPORT socket on the shared port.
    sock = reuseport_socket(config.host, config.port) if os.environ.get(WORKER_ENV) else None
    server = GatewayServer(config, registry, sock=sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Hot reload: the same file, env and flags as at start, read again.
    reloader = Reloader(
        server, lambda: load(argv, registry)[0], config_path(argv), config.config_watch_ms
    )
    await server.start()
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    await reloader.start()
    _tune_gc()
    print(server.describe(), flush=True)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await reloader.close()
        await server.stop()


def config_path(argv: Sequence[str] | None) -> str | None:
    args = _parser().parse_args(argv)
    return args.config or os.environ.get("GATEWAY_CONFIG") or None


def _tune_gc() -> None:
    """Keep the garbage collector off the request path (measured in bench/README.md).

    The ~40k objects built at start-up (aiohttp, msgspec, config) live for the
    whole process: freezing them means a full collection no longer walks them
    (15-20 ms a time, the p99 at 64 clients). A larger young generation means
    far fewer collections, and fewer in-flight request objects promoted to
    the old generations where only a full collection frees them.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional speed-up
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: Sequence[str] | None = None) -> int:
    registry = DefaultBackendRegistry()
    try:
        config, check_only = load(argv, registry)
        if check_only:
            print(check(config, registry))
            return 0
        setup_logging(config.log_level, config.log_format)
        if config.workers > 1:
            from chromagent_proxy.ops.workers import supervise

            return supervise(list(sys.argv[1:] if argv is None else argv), config)
        keep_freed_memory()  # each worker runs this line too (its own process)
        _install_uvloop()
        asyncio.run(serve(config, registry, argv))
    except ConfigError as exc:
        # One line, whatever a key or value in the message contains.
        # (every control character escaped: \x0c or \x1e would split it for a log reader).
        line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc))
        print(f"chromagent-gateway: error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0
    return 0
