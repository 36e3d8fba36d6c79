"""Whatever goes wrong inside, the client gets OpenAI JSON and the gateway keeps serving."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from chromagent_proxy import BackendConfig, BackendProvider, DefaultBackendRegistry
from chromagent_proxy.schema.openai import ChatCompletionRequest
from chromagent_proxy.service.state import STATE
from tests.support.gateway import run_gateway

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class NotJSONBackend(BackendProvider):
    type = "not-json"

    async def chat_completion(self, request: ChatCompletionRequest, config: BackendConfig) -> Any:
        return {"answer": object()}


async def post(url: str) -> tuple[int, str, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/chat/completions", json=BODY) as r:
        return r.status, r.headers["Content-Type"], await r.json()


async def test_backend_result_that_is_not_json_is_a_502_naming_it() -> None:
    registry = DefaultBackendRegistry()
    registry.register_custom_backend("not-json", NotJSONBackend)
    cfg = {"backends": [{"id": "odd", "type": "not-json"}], "defaultBackend": "odd"}
    async with run_gateway(cfg, registry) as gw:
        status, ctype, body = await post(gw.url)
    assert status == 502 and ctype.startswith("application/json")
    assert "'odd'" in body["error"]["message"]


async def test_an_internal_bug_is_a_json_500_with_the_request_id_and_others_carry_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = {"backends": [{"id": "mock", "type": "mock"}], "defaultBackend": "mock"}
    async with run_gateway(cfg) as gw:
        assert gw.app is not None
        router = gw.app[STATE].router
        real_plan = router.plan_for
        calls = 0

        def flaky_plan(model: str, needs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("simulated bug")
            return real_plan(model, needs)

        monkeypatch.setattr(router, "plan_for", flaky_plan)
        status, ctype, body = await post(gw.url)
        assert status == 500 and ctype.startswith("application/json")
        assert body["error"]["code"] == "internal_error"
        assert "request id" in body["error"]["message"]
        assert "simulated bug" not in body["error"]["message"]
        status, _, body = await post(gw.url)
        assert status == 200 and body["choices"][0]["message"]["content"] == "hi"
