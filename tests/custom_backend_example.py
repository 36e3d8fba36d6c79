"""A custom backend, exactly as the README (Custom backends) shows it (the e2e tests load this file).

Register it programmatically::

    registry = DefaultBackendRegistry()
    registry.register_custom_backend("my-custom-backend", MyCustomBackend)
    server = GatewayServer(config, registry)

or name it in the config for the CLI::

    {"id": "mine", "type": "my-custom-backend",
     "module": "tests.custom_backend_example:MyCustomBackend",
     "options": {"greeting": "Hello"}}
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from chromagent_proxy import BackendConfig, BackendProvider, current_context
from chromagent_proxy.schema.openai import ChatCompletionRequest


class MyCustomBackend(BackendProvider):
    type = "my-custom-backend"

    def supports_streaming(self) -> bool:
        return True

    def supports_tools(self) -> bool:
        return False

    def supports_images(self) -> bool:
        return False

    def validate_config(self, config: BackendConfig) -> tuple[bool, list[str]]:
        errors = []
        greeting = config.options.get("greeting")
        if not isinstance(greeting, str) or not greeting:
            errors.append("options.greeting must be a non-empty string")
        if config.base_url is not None:
            errors.append("baseUrl is not used by this backend")
        return not errors, errors

    def _reply(self, request: ChatCompletionRequest, config: BackendConfig) -> str:
        last = request.messages[-1].content
        text = last if isinstance(last, str) else ""
        return f"{config.options['greeting']}, you said: {text}"

    async def chat_completion(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> dict[str, Any]:
        # Plain dicts in the OpenAI shape are fine; so are the structs in schema.openai.
        reply = self._reply(request, config)
        return {
            "id": f"chatcmpl-{current_context().request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[dict[str, Any]]:
        cid, created = f"chatcmpl-{current_context().request_id}", int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        yield chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(self._reply(request, config).split(" ")):
            yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, "stop")
