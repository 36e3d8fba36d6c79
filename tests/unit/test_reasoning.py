"""The reasoning table (core/reasoning.py): printed in the README from the code, and the
model limits it promises for token budgets (the Messages dialect's ``thinking.budget_tokens``;
efforts are covered end to end in tests/e2e/test_reasoning_fidelity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chromagent_proxy.backends.anthropic import structured
from chromagent_proxy.core import ir, reasoning
from chromagent_proxy.core.errors import InvalidRequest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_prints_the_reasoning_table_from_the_code() -> None:
    text = README.read_text()
    start = text.index("<!-- reasoning-table -->\n") + len("<!-- reasoning-table -->\n")
    end = text.index("\n<!-- /reasoning-table -->")
    assert text[start:end] == reasoning.markdown()


def _budget(n: int) -> ir.Reasoning:
    return ir.Reasoning(budget_tokens=n, summary=True)


@pytest.mark.parametrize(
    ("model", "budget", "sent"),
    [
        ("gemini-2.5-pro", 50, 128),  # below Pro's minimum
        ("gemini-2.5-pro", 100_000, 32768),
        ("gemini-2.5-flash", 100_000, 24576),
        ("gemini-2.5-flash", 3000, 3000),
        ("gemini-2.5-flash-lite", 100, 512),
        ("gemini-2.5-flash-lite-preview-09-2025", 30_000, 24576),
        ("models/gemini-2.5-pro", 1024, 1024),
    ],
)
def test_gemini_25_budget_is_clamped_into_the_models_range(
    model: str, budget: int, sent: int
) -> None:
    assert reasoning.gemini(_budget(budget), model, "messages") == {"thinkingBudget": sent}


def test_gemini_3_takes_levels_for_budgets() -> None:
    assert reasoning.gemini(_budget(1024), "gemini-3-pro-preview") == {"thinkingLevel": "low"}
    assert reasoning.gemini(_budget(31999), "gemini-3-pro-preview") == {"thinkingLevel": "high"}
    assert reasoning.gemini(_budget(8000), "gemini-3-flash") == {"thinkingLevel": "medium"}


def test_gemini_without_thinking_names_the_messages_field() -> None:
    with pytest.raises(InvalidRequest) as exc:
        reasoning.gemini(_budget(2048), "gemini-2.0-flash", "messages")
    assert exc.value.param == "thinking.budget_tokens"


def test_claude_budget_limits() -> None:
    # below Anthropic's minimum: raised to 1024
    assert reasoning.claude(_budget(10), "claude-sonnet-4-5", None, 4096) == (
        {"type": "enabled", "budget_tokens": 1024},
        4096 + 1024,
    )
    # at or above the client's max_tokens: clamped below it
    assert reasoning.claude(_budget(31999), "claude-opus-4-1", 8000, 4096) == (
        {"type": "enabled", "budget_tokens": 7999},
        8000,
    )
    with pytest.raises(InvalidRequest) as exc:
        reasoning.claude(_budget(2000), "claude-sonnet-4-5", 1024, 4096, "messages")
    assert exc.value.param == "max_tokens"
    with pytest.raises(InvalidRequest) as exc:
        reasoning.claude(_budget(2000), "claude-3-5-sonnet-v2@20241022", None, 4096, "messages")
    assert exc.value.param == "thinking.budget_tokens"


def test_ollama_budget_is_a_boolean_or_a_level() -> None:
    assert reasoning.ollama(_budget(0), "qwen3") is False
    assert reasoning.ollama(_budget(5000), "qwen3") is True
    assert reasoning.ollama(_budget(5000), "gpt-oss:120b") == "medium"


def test_efforts_of_budgets_rise_with_the_budget() -> None:
    efforts = [reasoning.effort_of_budget(n) for n in (0, 100, 1024, 4096, 16000, 64000)]
    assert efforts == ["none", "minimal", "low", "medium", "high", "xhigh"]


@pytest.mark.parametrize(
    ("model", "api", "vertex"),
    [
        ("claude-sonnet-4-5", True, False),
        ("claude-sonnet-4-5@20250929", True, False),
        ("claude-haiku-4-5-20251001", True, False),
        ("claude-opus-4-6", True, True),
        ("claude-sonnet-4-6@default", True, True),
        ("claude-opus-4-1-20250805", False, False),
        ("claude-sonnet-4-20250514", False, False),
        ("claude-3-7-sonnet-20250219", False, False),
    ],
)
def test_native_structured_output_models(model: str, api: bool, vertex: bool) -> None:
    assert structured.native(model, vertex=False) is api
    assert structured.native(model, vertex=True) is vertex
