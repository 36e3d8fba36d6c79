"""The Messages dialect (official anthropic SDK) in front of translating backends:
``thinking.budget_tokens`` goes through the same reasoning table (clamped into a Gemini
model's range, a level for gpt-oss, a 400 naming the field where the model cannot think),
and usage stays disjoint: ``input_tokens`` is the uncached input only, next to
``cache_read_input_tokens`` — never the cached tokens twice."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.support.anthropic_sdk import anthropic_client, close_anthropic_clients  # noqa: F401
from tests.support.fidelity import GEMINI_USAGE, OPENAI_USAGE, config, serve_all
from tests.support.gateway import run_gateway
from tests.support.upstream import FakeUpstream

MSG: Any = [{"role": "user", "content": "Think."}]


@pytest.mark.parametrize(
    ("model", "thinking", "sent"),
    [
        ("g:gemini-2.5-pro", {"type": "enabled", "budget_tokens": 50_000}, 32768),
        ("g:gemini-2.5-pro", {"type": "disabled"}, 128),  # Pro cannot stop thinking
        ("vg:gemini-2.5-flash-lite", {"type": "enabled", "budget_tokens": 1024}, 1024),
        ("g:gemini-2.5-flash", {"type": "disabled"}, 0),
    ],
)
async def test_budget_reaches_gemini_in_range(
    upstream: FakeUpstream, model: str, thinking: dict[str, Any], sent: int
) -> None:
    serve_all(upstream)
    async with run_gateway(config(upstream)) as gw:
        await anthropic_client(gw).messages.create(  # type: ignore[call-overload]
            model=model,
            max_tokens=60_000,
            messages=MSG,
            thinking=thinking,
            timeout=30,  # the SDK wants a stream for this max_tokens unless a timeout is set
        )
    gc = upstream.received[-1].json["generationConfig"]
    assert gc["thinkingConfig"]["thinkingBudget"] == sent


async def test_budget_reaches_ollama_as_think(upstream: FakeUpstream) -> None:
    serve_all(upstream)
    async with run_gateway(config(upstream)) as gw:
        client = anthropic_client(gw)
        for model in ("o:gpt-oss:20b", "o:qwen3:8b"):
            await client.messages.create(
                model=model,
                max_tokens=9000,
                messages=MSG,
                thinking={"type": "enabled", "budget_tokens": 8000},
            )
    assert [r.json["think"] for r in upstream.received] == ["medium", True]


async def test_budget_on_a_model_without_thinking_is_a_400(upstream: FakeUpstream) -> None:
    serve_all(upstream)
    async with run_gateway(config(upstream)) as gw:
        with pytest.raises(anthropic.BadRequestError) as exc:
            await anthropic_client(gw).messages.create(
                model="g:gemini-2.0-flash",
                max_tokens=4000,
                messages=MSG,
                thinking={"type": "enabled", "budget_tokens": 2048},
            )
    assert "thinking.budget_tokens" in str(exc.value)
    assert upstream.received == []


@pytest.mark.parametrize(
    ("model", "cached", "reasoning_note"),
    [("g:gemini-2.5-flash", 600, "thoughts"), ("oa:gpt", 600, "reasoning")],
)
async def test_messages_usage_is_disjoint(
    upstream: FakeUpstream, model: str, cached: int, reasoning_note: str
) -> None:
    serve_all(upstream, usage={"gemini": GEMINI_USAGE, "openai": OPENAI_USAGE})
    async with run_gateway(config(upstream)) as gw:
        msg = await anthropic_client(gw).messages.create(model=model, max_tokens=100, messages=MSG)
    u = msg.usage
    # prompt of 1000 = 400 uncached + 600 read from the cache; 65 output incl. 25 of reasoning
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (
        1000 - cached,
        cached,
        0,
    )
    assert u.output_tokens == 65, reasoning_note
