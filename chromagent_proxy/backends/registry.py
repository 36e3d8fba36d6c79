"""DefaultBackendRegistry: the only place that knows which backend types exist.

Built-in types register through the same ``register_custom_backend`` call a
user's own backend uses.
"""

from __future__ import annotations

import importlib

from chromagent_proxy.backends.base import BackendProvider
from chromagent_proxy.core.config import BackendConfig
from chromagent_proxy.core.errors import ConfigError


class DefaultBackendRegistry:
    def __init__(self, *, builtins: bool = True) -> None:
        self._types: dict[str, type[BackendProvider]] = {}
        if builtins:
            _register_builtins(self)

    def register_custom_backend(self, type_name: str, cls: type[BackendProvider]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, BackendProvider)):
            raise TypeError(f"{cls!r} is not a BackendProvider subclass")
        self._types[type_name] = cls

    register = register_custom_backend

    def types(self) -> frozenset[str]:
        return frozenset(self._types)

    def get(self, type_name: str) -> type[BackendProvider] | None:
        return self._types.get(type_name)

    def create(self, config: BackendConfig) -> BackendProvider:
        """Instantiate and validate one backend; any problem is a ConfigError naming it."""
        cls = self._types.get(config.type)
        if cls is None and config.module:
            cls = _load_module_class(config)
            self._types[config.type] = cls
        if cls is None:
            known = ", ".join(sorted(self._types))
            raise ConfigError(
                f"backend '{config.id}': unknown backend type '{config.type}' (known types: {known})"
            )
        try:
            provider = cls()
            provider.config = config
            valid, errors = provider.validate_config(config)
        except Exception as exc:
            raise ConfigError(f"backend '{config.id}': invalid config: {exc}") from None
        if not valid:
            raise ConfigError(
                f"backend '{config.id}' ({config.type}): invalid config: "
                + "; ".join(errors or ["rejected by validate_config"])
            )
        return provider


def _load_module_class(config: BackendConfig) -> type[BackendProvider]:
    spec = config.module or ""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ConfigError(
            f"backend '{config.id}': module must look like 'package.module:ClassName' (got {spec!r})"
        )
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:
        raise ConfigError(
            f"backend '{config.id}': cannot import module '{mod_name}': {exc}"
        ) from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, BackendProvider)):
        raise ConfigError(f"backend '{config.id}': '{spec}' is not a BackendProvider subclass")
    return cls


def _register_builtins(registry: DefaultBackendRegistry) -> None:
    # Imported here so that importing the registry stays cheap and cycle-free.
    from chromagent_proxy.backends.anthropic import AnthropicBackend, VertexAnthropicBackend
    from chromagent_proxy.backends.gemini import GeminiBackend, VertexGeminiBackend
    from chromagent_proxy.backends.mock import MockBackend
    from chromagent_proxy.backends.ollama import OllamaBackend
    from chromagent_proxy.backends.openai import OpenAIBackend

    for cls in (
        OpenAIBackend,
        MockBackend,
        OllamaBackend,
        AnthropicBackend,
        VertexAnthropicBackend,
        GeminiBackend,
        VertexGeminiBackend,
    ):
        registry.register_custom_backend(cls.type, cls)


# gen_ai.provider.name (OpenTelemetry GenAI semantic conventions) per built-in backend type;
# other (custom) types report their own type name.
_GENAI_PROVIDERS = {
    "openai": "openai",
    "gemini": "gcp.gemini",
    "vertex-gemini": "gcp.vertex_ai",
    "anthropic": "anthropic",
    "vertex-anthropic": "gcp.vertex_ai",
    "ollama": "ollama",
    "mock": "mock",
}


def genai_provider_name(type_name: str) -> str:
    return _GENAI_PROVIDERS.get(type_name, type_name)
