"""Config: msgspec Structs mirroring the README's JSON (camelCase keys).

Unknown keys are forbidden; ``validate`` checks what a type cannot (ids,
references, ranges, secrets). Every problem is one ``ConfigError`` line naming
the field. Reading a file and the environment is ``config_load.py``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect
from msgspec import Struct

from chromagent_proxy.core.errors import ConfigError


class _Base(Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    pass


class BackendConfig(_Base):
    id: str
    type: str
    api_key: str | None = None
    base_url: str | None = None
    project_id: str | None = None
    location: str | None = None
    credentials_file: str | None = None
    enabled: bool = True
    model_mapping: dict[str, str] = msgspec.field(default_factory=dict)
    additional_headers: dict[str, str] = msgspec.field(default_factory=dict)
    weight: int = 1
    # "pkg.module:Class" of a custom BackendProvider, for CLI users.
    module: str | None = None
    # Backend-specific settings (Ollama options, a custom backend's own keys...).
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    keep_alive: str | int | None = None
    inline_images: bool = False
    default_max_tokens: int | None = None
    reply: str | None = None
    # anthropic / vertex-anthropic: anthropic-beta values forwarded on the native Messages
    # path (None: all on anthropic, a known-safe list on vertex-anthropic; ["*"]: all).
    anthropic_betas: list[str] | None = None
    # openai backends: relay /v1/responses to {baseUrl}/responses as bytes (OpenAI itself,
    # or a server that implements the Responses API) instead of translating it.
    native_responses: bool = False


class ResponsesConfig(_Base):
    """The Responses API (/v1/responses): stored responses and hosted tools."""

    store: Literal["memory", "redis", "off"] = "memory"
    redis_url: str | None = None  # default: rateLimit.redisUrl
    max_stored: int = 10_000
    ttl_ms: int = 3_600_000
    hosted_tools: Literal["drop", "refuse"] = "drop"


class RoutingRule(_Base):
    condition: str
    backend_id: str | None = None
    backend_ids: list[str] | None = None


class CorsConfig(_Base):
    origin: str | list[str] = "*"
    credentials: bool = False
    max_age: int = 600


class RateLimitConfig(_Base):
    enabled: bool = False
    window_ms: int = 60_000
    max: int = 100
    redis_url: str | None = None
    fail_open: bool = True
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    per_key_max: int | None = None


class TimeoutsConfig(_Base):
    connect_ms: int = 10_000
    first_byte_ms: int | None = None  # None: the top-level ``timeout``
    idle_ms: int = 120_000
    total_ms: int | None = None


class FailoverConfig(_Base):
    # Consecutive retryable failures before a backend is cooled down.
    failure_threshold: int = 3
    # First cooldown after repeated failures; doubles on each failed half-open probe.
    cooldown_ms: int = 30_000
    # Upper bound for any cooldown, Retry-After included.
    max_cooldown_ms: int = 300_000
    # Share backend health with every replica through this Redis (breaker_redis.py);
    # unset: rateLimit.redisUrl when that is set, else each process keeps its own.
    redis_url: str | None = None
    # How often each replica re-reads the shared health (a backstop for pub/sub).
    sync_interval_ms: int = 1_000


class MediaConfig(_Base):
    remote_fetch: bool = True
    allow_hosts: list[str] = msgspec.field(default_factory=list)
    allow_cidrs: list[str] = msgspec.field(default_factory=list)
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout_ms: int = 3_000
    total_timeout_ms: int = 15_000
    max_redirects: int = 3
    # Per request (media.py): image parts, image bytes in all, downloads at a time.
    max_images_per_request: Annotated[int, msgspec.Meta(ge=1)] = 100
    max_total_bytes: Annotated[int, msgspec.Meta(ge=1)] = 50 * 1024 * 1024
    fetch_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 4


class TracingConfig(_Base):
    """OpenTelemetry traces (README "Tracing (OpenTelemetry)"); exporter settings come
    from the standard OTEL_* environment variables. Read at start (not hot-reloaded)."""

    enabled: bool = False
    # Prompt and completion text on spans: off, they may hold personal data.
    capture_content: bool = False


# Each worker is a whole process (~60 MB); more than this is a typo, not a deployment.
MAX_WORKERS = 64

LogLevel = Literal["debug", "info", "warning", "error"]


class GatewayConfig(_Base):
    port: int = 3000
    host: str = "127.0.0.1"
    default_backend: str | None = None
    backends: list[BackendConfig] = msgspec.field(default_factory=list)
    routing_rules: list[RoutingRule] = msgspec.field(default_factory=list)
    cors: CorsConfig | None = None
    rate_limit: RateLimitConfig | None = None
    timeout: int = 30_000
    timeouts: TimeoutsConfig = msgspec.field(default_factory=TimeoutsConfig)
    max_body_bytes: int = 20 * 1024 * 1024
    media: MediaConfig = msgspec.field(default_factory=MediaConfig)
    api_keys: list[str] = msgspec.field(default_factory=list)
    max_attempts: int = 3
    failover: FailoverConfig = msgspec.field(default_factory=FailoverConfig)
    log_level: LogLevel = "info"
    log_format: Literal["json", "text"] = "json"
    workers: int = 1
    shutdown_timeout_ms: int = 30_000
    upstream_connection_limit: int = 0  # 0: unlimited (aiohttp's default of 100 throttles)
    # Longest a client may take to send a request head (slowloris guard, headerguard.py).
    header_timeout_ms: int = 10_000
    # Listen queue of connections not yet accepted (aiohttp's default, 128, drops
    # connections in bursts of thousands); Linux caps it at net.core.somaxconn.
    backlog: int = 4096
    responses: ResponsesConfig = msgspec.field(default_factory=ResponsesConfig)
    # Key material for reasoning state the gateway seals into what clients send back
    # (core/seal.py). Unset: a random secret per process (set it for workers/replicas).
    state_secret: str | None = None
    # Longest a client may take to send a request body after its head (headerguard.py).
    body_timeout_ms: int = 60_000
    # Open client connections past which new ones get a 503; 0: from the descriptor limit.
    max_connections: int = 0
    # Poll the config file this often and hot-reload it when it changes (0: SIGHUP only).
    config_watch_ms: int = 0
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)

    @property
    def health_redis_url(self) -> str | None:
        """Where backend health is shared, if anywhere."""
        if self.failover.redis_url:
            return self.failover.redis_url
        return self.rate_limit.redis_url if self.rate_limit is not None else None

    @property
    def first_byte_timeout_s(self) -> float:
        ms = self.timeouts.first_byte_ms or self.timeout
        return ms / 1000


def validate(cfg: GatewayConfig, known_types: frozenset[str] | None = None) -> None:
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"config $.port: {cfg.port} is out of range (0-65535)")
    if cfg.timeout <= 0:
        raise ConfigError("config $.timeout: must be a positive number of milliseconds")
    if cfg.max_body_bytes <= 0:
        raise ConfigError("config $.maxBodyBytes: must be positive")
    if not 1 <= cfg.workers <= MAX_WORKERS:
        raise ConfigError(f"config $.workers: must be between 1 and {MAX_WORKERS}")
    if cfg.max_attempts < 1:
        raise ConfigError("config $.maxAttempts: must be at least 1")
    if cfg.header_timeout_ms <= 0:
        raise ConfigError("config $.headerTimeoutMs: must be a positive number of milliseconds")
    if cfg.backlog < 1:
        raise ConfigError("config $.backlog: must be at least 1")
    if cfg.body_timeout_ms <= 0:
        raise ConfigError("config $.bodyTimeoutMs: must be a positive number of milliseconds")
    if cfg.max_connections < 0:
        raise ConfigError("config $.maxConnections: must be 0 (automatic) or positive")
    check_secrets(cfg)
    seen: set[str] = set()
    for i, b in enumerate(cfg.backends):
        where = f"config $.backends[{i}]"
        if not b.id:
            raise ConfigError(f"{where}.id: must not be empty")
        if b.id in seen:
            raise ConfigError(f"{where}.id: duplicate backend id '{b.id}'")
        seen.add(b.id)
        if known_types is not None and b.type not in known_types and b.module is None:
            known = ", ".join(sorted(known_types))
            raise ConfigError(
                f"{where}.type: unknown backend type '{b.type}' (known types: {known})"
            )
        if b.weight < 1:
            raise ConfigError(f"{where}.weight: must be a positive integer")
    if cfg.default_backend is not None:
        if cfg.default_backend not in seen:
            raise ConfigError(
                f"config $.defaultBackend: '{cfg.default_backend}' names no backend "
                f"(backends: {', '.join(sorted(seen)) or 'none'})"
            )
        if not next(b for b in cfg.backends if b.id == cfg.default_backend).enabled:
            raise ConfigError(
                f"config $.defaultBackend: backend '{cfg.default_backend}' is disabled"
            )
    if cfg.failover.sync_interval_ms <= 0:
        raise ConfigError("config $.failover.syncIntervalMs: must be a positive number of ms")
    if cfg.config_watch_ms < 0:
        raise ConfigError("config $.configWatchMs: must be 0 (off) or a number of milliseconds")
    if cfg.rate_limit is not None:
        if cfg.rate_limit.window_ms <= 0:
            raise ConfigError("config $.rateLimit.windowMs: must be positive")
        if cfg.rate_limit.max <= 0:
            raise ConfigError("config $.rateLimit.max: must be positive")


_BAD_IN_SECRET = re.compile(r"[\s\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _refuse_secret(where: str, value: str, pattern: re.Pattern[str]) -> None:
    # The message names the field, never the value.
    if not value.strip():
        raise ConfigError(f"config {where}: is empty or blank")
    if pattern.search(value):
        raise ConfigError(
            f"config {where}: contains whitespace or a control character (a trailing newline "
            "from a key file read with $(cat ...)?); remove it"
        )


def check_secrets(cfg: GatewayConfig) -> None:
    """One rule for every secret: refuse, never strip, empty values and stray whitespace.

    An empty gateway key would turn authentication off; a key with a trailing
    newline would never match (or would break the upstream request's header)."""
    for i, key in enumerate(cfg.api_keys):
        _refuse_secret(f"$.apiKeys[{i}]", key, _BAD_IN_SECRET)
    for i, b in enumerate(cfg.backends):
        if b.api_key is not None:
            _refuse_secret(f"$.backends[{i}].apiKey", b.api_key, _BAD_IN_SECRET)
        for name, value in b.additional_headers.items():
            # Header values may hold spaces ("Bearer x"), never line breaks or controls.
            if _CONTROL.search(value) or value != value.strip():
                shown = name if name.isprintable() else repr(name)
                raise ConfigError(
                    f"config $.backends[{i}].additionalHeaders.{shown}: has leading or trailing "
                    "whitespace or a control character; remove it"
                )
    if cfg.rate_limit is not None and cfg.rate_limit.redis_url is not None:
        _refuse_secret("$.rateLimit.redisUrl", cfg.rate_limit.redis_url, _BAD_IN_SECRET)
