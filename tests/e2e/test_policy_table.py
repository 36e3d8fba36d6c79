"""The one policy table, end to end: every refused Chat Completions field gets the same
answer (400, ``param`` naming the field) from every translating backend that refuses it,
through the official SDK, and nothing reaches the upstream; fields a backend maps or ignores
go through."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from chromagent_proxy.core import policy
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, json_reply

VALUES: dict[str, Any] = {
    "logprobs": True,
    "top_logprobs": 2,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "logit_bias": {"50256": -100},
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"},
    "web_search_options": {},
    "modalities": ["text", "audio"],
}
MODELS = {"gemini": "gem", "anthropic": "claude", "ollama": "llama"}


@pytest.fixture
async def upstream() -> Any:
    up = await FakeUpstream().start()
    up.route("*", json_reply({"error": {"message": "must not be called"}}, status=500))
    yield up
    await up.close()


def _config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "backends": [
            {"id": "gm", "type": "gemini", "apiKey": "k", "baseUrl": f"{up.url}/v1beta",
             "modelMapping": {"gem": "gemini-2.5-flash"}},
            {"id": "an", "type": "anthropic", "apiKey": "k", "baseUrl": up.url,
             "modelMapping": {"claude": "claude-sonnet-4-5"}},
            {"id": "ol", "type": "ollama", "baseUrl": up.url, "modelMapping": {"llama": "llama3"}},
        ]
    }  # fmt: skip


async def test_refused_fields_answer_the_same_from_every_backend(upstream: FakeUpstream) -> None:
    async with run_gateway(_config(upstream)) as gw:
        client = sdk(gw)
        for field, value in VALUES.items():
            answers: dict[str, tuple[int, str | None]] = {}
            for backend, model in MODELS.items():
                action = policy.TABLE[field][policy.BACKENDS.index(backend)]
                if field != "modalities" and action != "refuse":
                    continue
                with pytest.raises(openai.BadRequestError) as exc:
                    await client.chat.completions.create(
                        model=model,
                        messages=[{"role": "user", "content": "hi"}],
                        extra_body={field: value},
                    )
                body: Any = exc.value.body
                answers[backend] = (exc.value.status_code, body["param"])
            assert answers, field
            assert set(answers.values()) == {(400, field)}, (field, answers)
        await client.close()
    assert upstream.received == []  # refused before any upstream call
