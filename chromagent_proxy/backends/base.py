"""The contract every backend implements, built-in or custom.

A backend gets the decoded OpenAI request (``model`` already mapped to the
upstream name) and its own config. Per-request facts the gateway knows (request
id, the client's raw body, deadlines) are in ``current_context()``; the shared
HTTP session and gateway settings arrive once through ``start(runtime)``.

Non-stream results may be a ``ChatCompletion``, a plain dict, or JSON bytes;
stream parts may be a ``ChatCompletionChunk``, a dict, or one chunk's JSON bytes.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp

from chromagent_proxy.core import ir
from chromagent_proxy.core.errors import UnsupportedFeature
from chromagent_proxy.media.images import ImageFetcher
from chromagent_proxy.schema.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
)

if TYPE_CHECKING:
    from chromagent_proxy.backends.h1pool import H1Client
    from chromagent_proxy.core.config import BackendConfig, GatewayConfig

CompletionResult = ChatCompletion | Mapping[str, Any] | bytes
StreamPart = ChatCompletionChunk | Mapping[str, Any] | bytes


@dataclass(slots=True)
class BackendRuntime:
    """What the gateway hands every backend once, at start."""

    session: aiohttp.ClientSession
    gateway: GatewayConfig
    timeout: aiohttp.ClientTimeout
    first_byte_timeout: float
    images: ImageFetcher | None = None
    # Built-in backends send through it when set (upstream.open_response); ``session``
    # stays for custom backends, Ollama's model list and anything else on aiohttp.
    client: H1Client | None = None


@dataclass(slots=True)
class RequestContext:
    request_id: str
    raw_body: bytes
    client_model: str
    upstream_model: str
    backend_id: str
    # True for every stream: report usage in a final chunk (empty ``choices``). The gateway
    # counts it, and forwards it only to clients that sent stream_options.include_usage.
    include_usage: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # Headers every upstream request of this attempt carries (W3C trace context when
    # tracing is on): backends pass them to upstream.open_response(extra_headers=...).
    upstream_headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_current: contextvars.ContextVar[RequestContext] = contextvars.ContextVar("chromagent_request")


def current_context() -> RequestContext:
    """The context of the request being served (set by the gateway before each call)."""
    return _current.get()


def context_headers() -> Mapping[str, str]:
    """The current attempt's ``upstream_headers`` for ``open_response(extra_headers=...)``;
    none outside an attempt (e.g. count_tokens, which has no RequestContext)."""
    ctx = _current.get(None)
    return _NO_HEADERS if ctx is None else ctx.upstream_headers


def set_context(ctx: RequestContext) -> contextvars.Token[RequestContext]:
    return _current.set(ctx)


class BackendProvider:
    """Subclass this to add a backend type; register it with ``DefaultBackendRegistry``."""

    type: ClassVar[str] = "custom"
    #: Client dialects this backend serves as a byte relay, without the IR ("chat" for the
    #: openai backend, "messages" for the anthropic ones). See DESIGN.md §9.
    native_dialects: ClassVar[frozenset[str]] = frozenset()
    #: The backend dialect's name in the policy table (core/policy.py) and for signatures'
    #: origin; set by translating backends ("gemini", "anthropic", "ollama", "openai").
    dialect: ClassVar[str] = "custom"
    #: True when ``generate`` / ``generate_stream`` are implemented (the IR path). Custom
    #: backends that implement only ``chat_completion`` keep working: the gateway adapts.
    translates: ClassVar[bool] = False
    relays_chat_body: ClassVar[bool] = False  # True: see backends/openai.py (issue 20)

    def __init__(self) -> None:
        self.config: BackendConfig | None = None
        self.runtime: BackendRuntime | None = None

    # -- capabilities (checked by the router before any upstream I/O)
    def supports_streaming(self) -> bool:
        return True

    def supports_tools(self) -> bool:
        return False

    def supports_images(self) -> bool:
        return False

    def validate_config(self, config: BackendConfig) -> tuple[bool, list[str]]:
        """Check this backend's config; called once at start-up, before the port is bound."""
        return True, []

    async def start(self, runtime: BackendRuntime) -> None:
        """Called once the shared session exists; set up tokens or caches here."""
        self.runtime = runtime

    async def close(self) -> None:
        """Called at shutdown."""

    async def list_models(self) -> list[str]:
        """Models this backend serves beyond its ``modelMapping`` (e.g. what Ollama has pulled)."""
        return []

    async def chat_completion(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> CompletionResult:
        """The Chat Completions contract (custom backends implement this; translating
        built-ins implement ``generate`` instead and the gateway never calls this)."""
        raise NotImplementedError

    def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[StreamPart]:
        raise UnsupportedFeature(
            f"backend '{config.id}' does not support streaming", param="stream"
        )

    # -- the IR path (translating backends; DESIGN.md §9) --------------------------------

    async def generate(self, request: ir.Request, ctx: RequestContext) -> list[ir.Event]:
        """A whole answer as IR events (``request.model`` is the upstream model)."""
        raise NotImplementedError

    def generate_stream(
        self, request: ir.Request, ctx: RequestContext
    ) -> AsyncIterator[list[ir.Event]]:
        """The answer as lists of IR events, one list per upstream read (backends/shell.py)."""
        raise NotImplementedError

    # -- embeddings (/v1/embeddings)

    async def embed(self, request: ir.EmbedRequest, ctx: RequestContext) -> ir.EmbedResult:
        """Embed ``request.inputs`` in order; backends without embeddings keep this."""
        raise UnsupportedFeature(
            f"backend '{ctx.backend_id}' has no embeddings; model '{ctx.client_model}' cannot "
            "be used with /v1/embeddings",
            param="model",
        )
