"""GatewayClient: a small async client for this gateway (or any OpenAI-compatible server).

Built on aiohttp and msgspec, shaped like the official SDK::

    async with GatewayClient(base_url="http://localhost:3000") as client:
        done = await client.chat.completions.create(model="gpt-4o", messages=[...])
        print(done.choices[0].message.content)
        async for chunk in await client.chat.completions.create(..., stream=True):
            ...
        models = await client.models.list()

Responses are msgspec Structs (attribute access; ``msgspec.to_builtins`` for a
dict). Errors raise the ``APIError`` tree (client_errors.py, re-exported here),
carrying the OpenAI error's status, type, code, param and message. The client
never retries: the gateway already fails over between backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import aiohttp
import msgspec
from multidict import CIMultiDict

from chromagent_proxy.client.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    UnprocessableEntityError,
    error_fields,
    status_error,
)
from chromagent_proxy.client.types import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionDelta,
    Model,
    ModelList,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from chromagent_proxy.core import codec
from chromagent_proxy.core.sse import SSEDecoder

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "Choice",
    "ChunkChoice",
    "ConflictError",
    "Delta",
    "FunctionCall",
    "FunctionDelta",
    "GatewayClient",
    "InternalServerError",
    "Model",
    "ModelList",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "ToolCall",
    "ToolCallDelta",
    "UnprocessableEntityError",
    "Usage",
]

_completion = msgspec.json.Decoder(ChatCompletion)
_chunk = msgspec.json.Decoder(ChatCompletionChunk)
_models = msgspec.json.Decoder(ModelList)


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes, what: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise APIError(f"the server sent an invalid {what}: {exc}", body=data) from None


# ---------------------------------------------------------------- streaming


class AsyncStream:
    """Async iterator of ``ChatCompletionChunk``; ``async with`` or ``close()`` releases it."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.headers: CIMultiDict[str] = CIMultiDict(response.headers)
        self._iter = self._chunks()

    async def _chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        decoder = SSEDecoder()
        try:
            async for data in self.response.content.iter_any():
                for event in decoder.feed(data):
                    payload = event.data
                    if payload == b"[DONE]":
                        return
                    if event.event == "error" or payload.startswith(b'{"error"'):
                        data_any: Any = codec.loads(payload)
                        message, etype, code, param = error_fields(data_any)
                        raise APIError(message, type=etype, code=code, param=param, body=data_any)
                    yield _decode(_chunk, payload, "stream chunk")
        except aiohttp.ClientPayloadError as exc:
            raise APIConnectionError(f"the stream broke off: {exc}") from None
        except TimeoutError:
            raise APITimeoutError("the stream went silent (read timeout)") from None
        finally:
            self.response.close()

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self._iter

    async def __anext__(self) -> ChatCompletionChunk:
        return await anext(self._iter)

    async def close(self) -> None:
        await self._iter.aclose()  # type: ignore[attr-defined]
        self.response.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ---------------------------------------------------------------- client


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.read()
    except TimeoutError:
        raise APITimeoutError(f"reading the response from {resp.url} timed out") from None
    except aiohttp.ClientError as exc:
        raise APIConnectionError(f"reading the response from {resp.url} failed: {exc}") from None
    finally:
        resp.release()


class _Completions:
    def __init__(self, client: GatewayClient) -> None:
        self._client = client

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Any],
        stream: Literal[False] = False,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Any],
        stream: Literal[True],
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> AsyncStream: ...

    async def create(
        self,
        *,
        model: str,
        messages: Sequence[Any],
        stream: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatCompletion | AsyncStream:
        """POST /v1/chat/completions → ``ChatCompletion``, or an ``AsyncStream`` if ``stream``.

        ``messages``, ``tools`` and the rest may be dicts or msgspec Structs;
        parameters given as None are left out.
        """
        body: dict[str, Any] = {"model": model, "messages": list(messages)}
        body.update((k, v) for k, v in params.items() if v is not None)
        if stream:
            body["stream"] = True
        payload = msgspec.json.encode(body)
        resp = await self._client._post("/chat/completions", payload, stream, extra_headers)
        if stream:
            return AsyncStream(resp)
        done: ChatCompletion = _decode(_completion, await _read(resp), "chat completion")
        return done


class _Chat:
    def __init__(self, client: GatewayClient) -> None:
        self.completions = _Completions(client)


class _Models:
    def __init__(self, client: GatewayClient) -> None:
        self._client = client

    async def list(self) -> ModelList:
        resp = await self._client._request("GET", "/models", None, False, None)
        result: ModelList = _decode(_models, await _read(resp), "model list")
        return result


class GatewayClient:
    def __init__(
        self,
        base_url: str = "http://localhost:3000",
        api_key: str | None = None,
        timeout: float | None = 600.0,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self.chat = _Chat(self)
        self.models = _Models(self)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def _post(
        self, path: str, body: bytes, stream: bool, headers: Mapping[str, str] | None
    ) -> aiohttp.ClientResponse:
        return await self._request("POST", path, body, stream, headers)

    async def _request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        stream: bool,
        headers: Mapping[str, str] | None,
    ) -> aiohttp.ClientResponse:
        t = self.timeout
        # A stream may run long: bound the connect and each silent gap, not the total.
        timeout = (
            aiohttp.ClientTimeout(total=None, sock_connect=t, sock_read=t)
            if stream
            else aiohttp.ClientTimeout(total=t)
        )
        url = self.base_url + path
        try:
            resp = await self._get_session().request(
                method, url, data=body, headers=headers, timeout=timeout
            )
            if resp.status >= 400:
                try:
                    data = await resp.read()
                finally:
                    resp.release()
                raise status_error(resp.status, data, resp.headers)
        except TimeoutError:
            raise APITimeoutError(f"{method} {url} timed out after {t}s") from None
        except aiohttp.ClientError as exc:
            raise APIConnectionError(f"{method} {url} failed: {exc}") from None
        return resp

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> GatewayClient:
        self._get_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
