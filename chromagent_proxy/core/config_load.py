"""Loading the config: file → ``${VAR}`` → ``GATEWAY_*`` env vars → flags → checked config.

Pure: no I/O but reading the file. Every problem is one ``ConfigError`` line naming the
field, with the closest known key when one is misspelled.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect
import orjson

from chromagent_proxy.core.config import GatewayConfig, validate
from chromagent_proxy.core.errors import ConfigError

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


def load_config(
    path: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    known_types: frozenset[str] | None = None,
) -> GatewayConfig:
    data = read_json(path) if path is not None else {}
    return build_config(data, env=env, overrides=overrides, known_types=known_types)
