"""chromagent_proxy: an OpenAI-compatible LLM gateway on aiohttp."""

from __future__ import annotations

__version__ = "0.1.0"

from .backends.base import BackendProvider, BackendRuntime, RequestContext, current_context
from .backends.registry import DefaultBackendRegistry
from .client import GatewayClient
from .config import BackendConfig, GatewayConfig
from .errors import ConfigError, GatewayError
from .server import GatewayServer

__all__ = [
    "BackendConfig",
    "BackendProvider",
    "BackendRuntime",
    "ConfigError",
    "DefaultBackendRegistry",
    "GatewayClient",
    "GatewayConfig",
    "GatewayError",
    "GatewayServer",
    "RequestContext",
    "__version__",
    "current_context",
]
