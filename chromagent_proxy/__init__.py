"""chromagent_proxy: an OpenAI-compatible LLM gateway on aiohttp."""

from __future__ import annotations

__version__ = "0.1.0"

from chromagent_proxy.backends.base import (
    BackendProvider,
    BackendRuntime,
    RequestContext,
    current_context,
)
from chromagent_proxy.backends.registry import DefaultBackendRegistry
from chromagent_proxy.client import GatewayClient
from chromagent_proxy.core.config import BackendConfig, GatewayConfig
from chromagent_proxy.core.errors import ConfigError, GatewayError
from chromagent_proxy.service.server import GatewayServer

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
