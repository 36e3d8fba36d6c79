"""Routing rules: the request facts a rule can test, condition parsing, and the config check.

A condition is ``key: value`` clauses joined by ``&&``: ``model`` takes an
fnmatch glob, ``has_tools`` / ``has_images`` / ``stream`` take true or false.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from .config import GatewayConfig
from .errors import ConfigError
from .schema.openai import ChatCompletionRequest


@dataclass(slots=True)
class Needs:
    stream: bool
    tools: bool
    images: bool


def needs_of(req: ChatCompletionRequest) -> Needs:
    images = False
    for msg in req.messages:
        content = msg.content
        if isinstance(content, list) and any(p.type == "image_url" for p in content):
            images = True
            break
    return Needs(bool(req.stream), bool(req.tools), images)


# ---------------------------------------------------------------- rule conditions

_FLAGS = ("has_tools", "has_images", "stream")
_KEYS = ("model", *_FLAGS)
_BOOLS = {"true": True, "false": False}


@dataclass(slots=True, frozen=True)
class Condition:
    model: re.Pattern[str] | None
    flags: tuple[tuple[str, bool], ...]

    def matches(self, model: str, needs: Needs) -> bool:
        if self.model is not None and self.model.match(model) is None:
            return False
        for name, want in self.flags:
            have = (
                needs.tools
                if name == "has_tools"
                else needs.images
                if name == "has_images"
                else needs.stream
            )
            if have != want:
                return False
        return True


def _check_glob(glob: str) -> re.Pattern[str]:
    if not glob or any(c.isspace() for c in glob):
        raise ValueError(f"bad glob {glob!r}: must be non-empty and contain no spaces")
    i = 0
    while i < len(glob):
        if glob[i] == "[":
            # fnmatch rules: a ']' right after '[' or '[!' is a literal member.
            j = i + 1
            if j < len(glob) and glob[j] == "!":
                j += 1
            if j < len(glob) and glob[j] == "]":
                j += 1
            j = glob.find("]", j)
            if j == -1:
                raise ValueError(f"bad glob {glob!r}: '[' at position {i} is never closed")
            i = j
        i += 1
    try:
        return re.compile(fnmatch.translate(glob))
    except re.error as exc:
        raise ValueError(f"bad glob {glob!r}: {exc}") from None


def parse_condition(text: str) -> Condition:
    """``model: claude-* && has_tools: true`` → Condition; ValueError says what is wrong."""
    model: re.Pattern[str] | None = None
    flags: list[tuple[str, bool]] = []
    parts = text.split("&&")
    for part in parts:
        key, sep, value = part.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"bad condition {part.strip()!r}: expected 'key: value'")
        if key not in _KEYS:
            raise ValueError(f"unknown condition {key!r} (known: {', '.join(_KEYS)})")
        if key == "model":
            if model is not None:
                raise ValueError("'model' appears twice")
            model = _check_glob(value)
            continue
        if value not in _BOOLS:
            raise ValueError(f"{key} must be true or false (got {value!r})")
        flags.append((key, _BOOLS[value]))
    return Condition(model, tuple(flags))


def compile_rules(cfg: GatewayConfig) -> list[tuple[Condition, list[str]]]:
    """Check every routing rule (and the failover settings); ConfigError names the bad rule."""
    f = cfg.failover
    for name, value in (
        ("failureThreshold", f.failure_threshold),
        ("cooldownMs", f.cooldown_ms),
        ("maxCooldownMs", f.max_cooldown_ms),
    ):
        if value < 1:
            raise ConfigError(f"config $.failover.{name}: must be a positive integer")
    backends = {b.id: b for b in cfg.backends}
    out: list[tuple[Condition, list[str]]] = []
    for i, rule in enumerate(cfg.routing_rules):
        where = f"config $.routingRules[{i}] ({rule.condition!r})"
        try:
            cond = parse_condition(rule.condition)
        except ValueError as exc:
            raise ConfigError(f"{where}: condition: {exc}") from None
        if rule.backend_id is not None and rule.backend_ids is not None:
            raise ConfigError(f"{where}: give either backendId or backendIds, not both")
        ids = [rule.backend_id] if rule.backend_id is not None else list(rule.backend_ids or [])
        if not ids:
            raise ConfigError(f"{where}: needs backendId or a non-empty backendIds")
        for bid in ids:
            b = backends.get(bid)
            if b is None:
                known = ", ".join(sorted(backends)) or "none"
                raise ConfigError(f"{where}: backend '{bid}' does not exist (backends: {known})")
            if not b.enabled:
                raise ConfigError(f"{where}: backend '{bid}' is disabled")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{where}: backendIds lists a backend twice")
        out.append((cond, ids))
    return out


def labelled_models(
    cfg: GatewayConfig, rules: list[tuple[Condition, list[str]]]
) -> tuple[list[str], list[re.Pattern[str]]]:
    """What gets its own metrics model label: modelMapping keys, and the rule model globs."""
    names = [m for b in cfg.backends for m in b.model_mapping]
    return names, [cond.model for cond, _ in rules if cond.model is not None]
