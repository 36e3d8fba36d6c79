"""Reasoning settings reach each model family as its own control, within the model's range,
through the real gateway (official openai SDK; Responses for ``reasoning.effort``):
Gemini 2.5 ``thinkingBudget``, Gemini 3 ``thinkingLevel``, Claude ``thinking.budget_tokens``
with ``max_tokens``, Ollama ``think``. A value a model cannot honour is adjusted as the
README's reasoning table says, or refused with a 400 naming the field before any upstream
call."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.support.fidelity import config, serve_all
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream

MSG: Any = [{"role": "user", "content": "Think."}]


async def _sent(up: FakeUpstream, model: str, **kw: Any) -> dict[str, Any]:
    serve_all(up)
    async with run_gateway(config(up)) as gw:
        await sdk(gw).chat.completions.create(model=model, messages=MSG, **kw)
    body: dict[str, Any] = up.received[-1].json
    return body


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        # 2.5 Pro cannot turn thinking off: none → its minimum 128; xhigh within 32768
        ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),
        ("gemini-2.5-pro", "minimal", {"thinkingBudget": 512}),
        ("gemini-2.5-pro", "xhigh", {"thinkingBudget": 32768}),
        # 2.5 Flash: 0 = off, at most 24576
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192}),
        ("gemini-2.5-flash", "xhigh", {"thinkingBudget": 24576}),
        # 2.5 Flash-Lite: 0 = off, else 512-24576
        ("gemini-2.5-flash-lite", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-flash-lite", "minimal", {"thinkingBudget": 512}),
        ("gemini-2.5-flash-lite", "high", {"thinkingBudget": 24576}),
        # Gemini 3 Pro: low / high only; Gemini 3 Flash: minimal…high
        ("gemini-3-pro-preview", "none", {"thinkingLevel": "low"}),
        ("gemini-3-pro-preview", "medium", {"thinkingLevel": "high"}),
        ("gemini-3-flash-preview", "none", {"thinkingLevel": "minimal"}),
        ("gemini-3-flash-preview", "medium", {"thinkingLevel": "medium"}),
        ("gemini-3-flash-preview", "xhigh", {"thinkingLevel": "high"}),
    ],
)
async def test_gemini_thinking_config(
    upstream: FakeUpstream, model: str, effort: str, thinking: dict[str, Any]
) -> None:
    for prefix in ("g", "vg"):
        body = await _sent(upstream, f"{prefix}:{model}", reasoning_effort=effort)
        assert body == {
            "contents": [{"role": "user", "parts": [{"text": "Think."}]}],
            "generationConfig": {"thinkingConfig": thinking},
        }
    assert upstream.received[-2].path == f"/v1beta/models/{model}:generateContent"


async def test_gemini_without_thinking_refuses_effort_before_the_upstream(
    upstream: FakeUpstream,
) -> None:
    serve_all(upstream)
    async with run_gateway(config(upstream)) as gw:
        with pytest.raises(openai.BadRequestError) as exc:
            await sdk(gw).chat.completions.create(
                model="g:gemini-2.0-flash", messages=MSG, reasoning_effort="high"
            )
        assert exc.value.body["param"] == "reasoning_effort"  # type: ignore[index]
        assert "gemini-2.0-flash" in exc.value.body["message"]  # type: ignore[index]
        # "none" asks for nothing the model lacks: sent without thinkingConfig.
        await sdk(gw).chat.completions.create(
            model="g:gemini-2.0-flash", messages=MSG, reasoning_effort="none"
        )
    assert len(upstream.received) == 1
    assert "generationConfig" not in upstream.received[0].json


@pytest.mark.parametrize(
    ("effort", "budget"), [("minimal", 1024), ("low", 2048), ("medium", 8192), ("xhigh", 24576)]
)
async def test_claude_budget_and_room_for_the_answer(
    upstream: FakeUpstream, effort: str, budget: int
) -> None:
    body = await _sent(upstream, "a:claude-sonnet-4-5", reasoning_effort=effort)
    assert body == {
        "model": "claude-sonnet-4-5",
        # no max_tokens from the client: the default answer room plus the budget
        "max_tokens": 4096 + budget,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Think."}]}],
        "thinking": {"type": "enabled", "budget_tokens": budget},
    }


async def test_claude_budget_clamped_below_the_clients_max_tokens(upstream: FakeUpstream) -> None:
    body = await _sent(
        upstream, "va:claude-3-7-sonnet@20250219", reasoning_effort="high", max_tokens=3000
    )
    assert body == {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 3000,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Think."}]}],
        "thinking": {"type": "enabled", "budget_tokens": 2999},
    }
    # effort none: no thinking at all
    body = await _sent(upstream, "a:claude-sonnet-4-5", reasoning_effort="none", max_tokens=50)
    assert "thinking" not in body and body["max_tokens"] == 50


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"model": "a:claude-3-5-haiku-20241022", "reasoning_effort": "low"}, "reasoning_effort"),
        ({"model": "a:claude-sonnet-4-5", "reasoning_effort": "low", "max_tokens": 1000}, "max_tokens"),
        ({"model": "a:claude-sonnet-4-5", "reasoning_effort": "low", "temperature": 0.2}, "temperature"),
        ({"model": "a:claude-sonnet-4-5", "reasoning_effort": "low", "top_p": 0.5}, "top_p"),
        (
            {
                "model": "a:claude-sonnet-4-5",
                "reasoning_effort": "low",
                "tool_choice": "required",
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            },
            "tool_choice",
        ),
    ],
)  # fmt: skip
async def test_claude_refusals_name_the_field(
    upstream: FakeUpstream, kw: dict[str, Any], param: str
) -> None:
    serve_all(upstream)
    async with run_gateway(config(upstream)) as gw:
        with pytest.raises(openai.BadRequestError) as exc:
            await sdk(gw).chat.completions.create(messages=MSG, **kw)
    assert exc.value.body["param"] == param  # type: ignore[index]
    assert upstream.received == []


@pytest.mark.parametrize(
    ("model", "effort", "think"),
    [
        ("qwen3:8b", "none", False),
        ("qwen3:8b", "low", True),
        ("qwen3:8b", "xhigh", True),
        ("gpt-oss:20b", "none", "low"),  # gpt-oss cannot stop thinking
        ("gpt-oss:20b", "minimal", "low"),
        ("gpt-oss:20b", "medium", "medium"),
        ("gpt-oss:20b", "xhigh", "high"),
    ],
)
async def test_ollama_think(upstream: FakeUpstream, model: str, effort: str, think: Any) -> None:
    body = await _sent(upstream, f"o:{model}", reasoning_effort=effort)
    assert body == {
        "model": model,
        "messages": [{"role": "user", "content": "Think."}],
        "stream": False,
        "think": think,
    }


async def test_responses_reasoning_effort_uses_the_same_table(upstream: FakeUpstream) -> None:
    serve_all(upstream)
    async with run_gateway(config(upstream)) as gw:
        client = sdk(gw)
        await client.responses.create(
            model="g:gemini-2.5-pro", input="Think.", reasoning={"effort": "none"}, store=False
        )
        await client.responses.create(
            model="a:claude-sonnet-4-5", input="Think.", reasoning={"effort": "low"}, store=False
        )
        with pytest.raises(openai.BadRequestError) as exc:
            await client.responses.create(
                model="g:gemini-2.0-flash", input="Think.", reasoning={"effort": "low"}
            )
    gemini, claude = (r.json for r in upstream.received)
    assert gemini["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 128
    assert claude["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert claude["max_tokens"] == 4096 + 2048
    assert exc.value.body["param"] == "reasoning.effort"  # type: ignore[index]
