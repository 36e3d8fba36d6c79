"""Config: msgspec Structs mirroring the README's JSON (camelCase keys).

Loading is pure: read the file, interpolate ``${VAR}``, overlay ``GATEWAY_*``
env vars and CLI flags, decode with unknown keys forbidden, then check what a
type cannot (ids, references, ranges). Every problem is one ``ConfigError``
line naming the field.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect
import orjson
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


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# env var → (path in the JSON, parser)
_ENV_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "GATEWAY_PORT": (("port",), "int"),
    "GATEWAY_HOST": (("host",), "str"),
    "GATEWAY_DEFAULT_BACKEND": (("defaultBackend",), "str"),
    "GATEWAY_CORS_ORIGIN": (("cors", "origin"), "origins"),
    "GATEWAY_CORS_CREDENTIALS": (("cors", "credentials"), "bool"),
    "GATEWAY_RATE_LIMIT_WINDOW_MS": (("rateLimit", "windowMs"), "int"),
    "GATEWAY_RATE_LIMIT_MAX": (("rateLimit", "max"), "int"),
    "GATEWAY_REDIS_URL": (("rateLimit", "redisUrl"), "str"),
    "GATEWAY_STATE_SECRET": (("stateSecret",), "str"),
    "GATEWAY_TIMEOUT": (("timeout",), "int"),
    "GATEWAY_LOG_LEVEL": (("logLevel",), "str"),
    "GATEWAY_LOG_FORMAT": (("logFormat",), "str"),
    "GATEWAY_WORKERS": (("workers",), "int"),
    "GATEWAY_API_KEYS": (("apiKeys",), "keys"),
    "GATEWAY_MAX_BODY_BYTES": (("maxBodyBytes",), "int"),
}

ENV_VARS = tuple(_ENV_KEYS)


def _parse_env(name: str, raw: str, kind: str) -> Any:
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if kind == "bool":
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    if kind == "origins":
        items = [o.strip() for o in raw.split(",") if o.strip()]
        return items[0] if items == ["*"] else items
    if kind == "list":
        return [o.strip() for o in raw.split(",") if o.strip()]
    if kind == "keys":
        # An empty entry (" , ", "k1,,k2", a trailing comma) is a mistake, never "no key":
        # dropping it silently could leave the gateway with no keys and auth off.
        items = [o.strip() for o in raw.split(",")]
        for i, item in enumerate(items):
            if not item:
                raise ConfigError(
                    f"{name}: entry {i + 1} of {len(items)} is empty; list keys separated by "
                    "commas, or unset the variable to run without API keys"
                )
        return items
    return raw


def _interpolate(value: Any, env: Mapping[str, str], path: str) -> Any:
    if isinstance(value, str):
        if "${" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                raise ConfigError(f"{path}: environment variable ${{{name}}} is not set")
            return env[name]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        # An odd key (newline, control character) is shown quoted: errors stay one line.
        return {
            k: _interpolate(v, env, f"{path}.{k}" if k.isprintable() else f"{path}[{k!r}]")
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def read_json(path: str | Path) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            f"config file {path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a JSON object")
    return data


def _set(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def build_config(
    data: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    known_types: frozenset[str] | None = None,
) -> GatewayConfig:
    """file dict → ${VAR} → env overlay → flag overrides → typed, checked config."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = _interpolate(dict(data or {}), env, "$")
    # ``rateLimit`` present in env means the operator wants it on.
    for name, (keys, kind) in _ENV_KEYS.items():
        raw = env.get(name)
        if raw is not None and (raw != "" or kind == "keys"):
            _set(merged, keys, _parse_env(name, raw, kind))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(merged, (key,), value)
    rl = merged.get("rateLimit")
    if isinstance(rl, dict) and "enabled" not in rl:
        rl["enabled"] = True
    try:
        cfg = msgspec.convert(merged, GatewayConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
    validate(cfg, known_types)
    return cfg


def _explain(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    i = text.rfind(" - at `")
    where = "$" if i == -1 else text[i + 7 :].rstrip("`")
    text = text if i == -1 else text[:i]
    unknown = _UNKNOWN.fullmatch(text)
    if unknown is not None:
        text += _hint(where, unknown.group(1))
    line = f"config: {text}" if i == -1 else f"config {where}: {text}"
    # One line whatever the keys hold (a key may contain a newline): control chars escaped.
    return re.sub("[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", line)


_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`")


def _hint(where: str, key: str) -> str:
    """A closest known key for a misspelled one (fields at ``where``, e.g. ``$.backends[0]``)."""
    node: Any = msgspec.inspect.type_info(GatewayConfig)
    for name, _index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", where[1:]):
        node = _unwrap(node)
        if name:
            fields = {f.encode_name: f.type for f in getattr(node, "fields", ())}
            node = fields.get(name)
        else:
            node = getattr(node, "item_type", None)
    known = [f.encode_name for f in getattr(_unwrap(node), "fields", ())]
    if where == "$" and key in ("id", "type", "modelMapping", "baseUrl", "apiKey"):
        return ' (this looks like one backend entry: put it inside "backends": [...])'
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _unwrap(node: Any) -> Any:
    """The struct (or list) inside an optional type."""
    for member in getattr(node, "types", ()):
        if isinstance(member, msgspec.inspect.StructType | msgspec.inspect.ListType):
            return member
    return node


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


def load_config(
    path: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    known_types: frozenset[str] | None = None,
) -> GatewayConfig:
    data = read_json(path) if path is not None else {}
    return build_config(data, env=env, overrides=overrides, known_types=known_types)
