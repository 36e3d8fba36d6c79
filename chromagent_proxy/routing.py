"""Which backend serves a request: an ordered list of attempts.

Order: backends whose ``modelMapping`` has the model (rotated round robin so
load spreads), then ``defaultBackend`` (the model passes through unchanged).
Backends lacking a capability the request needs are dropped; if that leaves
nothing, the 400 names the capability.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import count

from .backends.base import BackendProvider
from .config import BackendConfig, GatewayConfig
from .errors import ModelNotFound, UnsupportedFeature
from .schema.openai import ChatCompletionRequest


@dataclass(slots=True)
class Backend:
    config: BackendConfig
    provider: BackendProvider

    @property
    def id(self) -> str:
        return self.config.id


@dataclass(slots=True, frozen=True)
class Attempt:
    backend: Backend
    upstream_model: str


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


class Router:
    def __init__(self, config: GatewayConfig, backends: dict[str, Backend]) -> None:
        self.config = config
        self.backends = backends
        enabled = [b for b in backends.values() if b.config.enabled]
        self._by_model: dict[str, list[Backend]] = {}
        for b in enabled:
            for model in b.config.model_mapping:
                self._by_model.setdefault(model, []).append(b)
        self._turn: dict[str, count[int]] = {m: count() for m in self._by_model}
        self._default = backends.get(config.default_backend or "")

    def models(self) -> dict[str, str]:
        """Served model name → id of the first backend serving it."""
        return {m: bs[0].id for m, bs in self._by_model.items()}

    def plan(self, req: ChatCompletionRequest) -> list[Attempt]:
        model = req.model
        candidates: list[Attempt] = []
        pool = self._by_model.get(model)
        if pool:
            start = next(self._turn[model]) % len(pool)
            for b in pool[start:] + pool[:start]:
                candidates.append(Attempt(b, b.config.model_mapping[model]))
        if self._default is not None and not any(a.backend is self._default for a in candidates):
            candidates.append(Attempt(self._default, model))
        if not candidates:
            raise ModelNotFound(
                f"The model '{model}' is not served by this gateway; "
                "GET /v1/models lists the models it serves.",
                param="model",
            )
        needs = needs_of(req)
        usable = [a for a in candidates if _capable(a.backend.provider, needs) is None]
        if not usable:
            missing = _capable(candidates[0].backend.provider, needs)
            raise UnsupportedFeature(
                f"No backend serving model '{model}' supports {missing}.",
                param=_PARAM_OF.get(missing or ""),
            )
        return usable[: self.config.max_attempts]


_PARAM_OF = {"streaming": "stream", "tools": "tools", "images": "messages"}


def _capable(p: BackendProvider, needs: Needs) -> str | None:
    if needs.stream and not p.supports_streaming():
        return "streaming"
    if needs.tools and not p.supports_tools():
        return "tools"
    if needs.images and not p.supports_images():
        return "images"
    return None
