"""The one reasoning table: a client's reasoning setting → each model family's own control.

Clients say how hard to think either as an effort (Chat ``reasoning_effort``, Responses
``reasoning.effort``: none, minimal, low, medium, high, xhigh) or as a token budget
(Messages ``thinking.budget_tokens``; ``thinking.type: "adaptive"`` arrives as effort
medium, ``"disabled"`` as effort none). Every translating builder asks this module;
nothing here knows a backend type (pure functions on model names and numbers).

Model limits (sources: Gemini "Thinking" docs https://ai.google.dev/gemini-api/docs/thinking
— set-budget table and thinking levels; wire-formats.md §4.2 ``thinkingConfig``; Anthropic
extended thinking, wire-formats.md §2.2 ``thinking``: ``budget_tokens`` ≥ 1024 and
< ``max_tokens``; Ollama ``think``, wire-formats.md §6.1, levels only for gpt-oss):

- Gemini 2.5 Pro: ``thinkingBudget`` 128–32768, thinking cannot be turned off.
- Gemini 2.5 Flash: 0–24576 (0 = off). Gemini 2.5 Flash-Lite: 512–24576, 0 = off.
- Gemini 3 Pro: ``thinkingLevel`` low or high (cannot be turned off); Gemini 3 Flash:
  minimal, low, medium, high.
- Gemini 2.0 / 1.5: no thinking at all.
- Claude: ``thinking.budget_tokens`` ≥ 1024 and < ``max_tokens``; Claude 3.7 Sonnet and
  every Claude 4+ model think, older ones (3.5, 3 Opus/Haiku) do not.
- Ollama: ``think`` true/false; gpt-oss takes "low" / "medium" / "high" and cannot be
  turned off.

What cannot be honoured is adjusted as the table says (a budget outside a model's range is
clamped into it; "none" on a model that always thinks becomes its lowest setting) or
refused with a 400 naming the field (reasoning on a model that has no thinking).
"""

from __future__ import annotations

from typing import Any

from chromagent_proxy.core import ir
from chromagent_proxy.core.errors import InvalidRequest

EFFORTS: tuple[ir.ReasoningEffort, ...] = ("none", "minimal", "low", "medium", "high", "xhigh")

# ---------------------------------------------------------------- budgets ↔ efforts

#: Effort → token budget, the common scale (then clamped into each model's range).
BUDGET: dict[str, int] = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 32768,
}


def effort_of_budget(budget: int) -> ir.ReasoningEffort:
    """The effort a token budget amounts to (for controls that only take levels)."""
    if budget <= 0:
        return "none"
    if budget <= 512:
        return "minimal"
    if budget <= 2048:
        return "low"
    if budget <= 8192:
        return "medium"
    if budget <= 24576:
        return "high"
    return "xhigh"


def _param(r: ir.Reasoning, dialect: str) -> str:
    """The field the client set (named in 400s)."""
    if r.budget_tokens is not None:
        return "thinking.budget_tokens"
    return "reasoning.effort" if dialect == "responses" else "reasoning_effort"


def _effort(r: ir.Reasoning) -> ir.ReasoningEffort | None:
    if r.effort is not None:
        return r.effort
    if r.budget_tokens is not None:
        return effort_of_budget(r.budget_tokens)
    return None


# ---------------------------------------------------------------- Gemini

#: Gemini 2.5 thinkingBudget ranges: (min when thinking, max, can be turned off with 0).
GEMINI_25_RANGES: dict[str, tuple[int, int, bool]] = {
    "gemini-2.5-pro": (128, 32768, False),
    "gemini-2.5-flash": (1, 24576, True),
    "gemini-2.5-flash-lite": (512, 24576, True),
}
#: Gemini 3 thinkingLevel per effort.
GEMINI_3_LEVELS: dict[str, dict[str, str]] = {
    "gemini-3-pro": {
        "none": "low",  # cannot be turned off: the lowest level
        "minimal": "low",
        "low": "low",
        "medium": "high",
        "high": "high",
        "xhigh": "high",
    },
    "gemini-3-flash": {
        "none": "minimal",  # cannot be turned off: the lowest level
        "minimal": "minimal",
        "low": "low",
        "medium": "medium",
        "high": "high",
        "xhigh": "high",
    },
}


def gemini_family(model: str) -> str:
    """``gemini-2.5-pro`` / ``-flash`` / ``-flash-lite``, ``gemini-3-pro`` / ``-flash``,
    ``gemini-old`` (no thinking) or ``gemini-2.5-flash`` for a name we do not know (the
    widest range that can also be turned off)."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith("gemini-3"):
        return "gemini-3-flash" if "flash" in name else "gemini-3-pro"
    if name.startswith("gemini-2.5"):
        if "flash-lite" in name:
            return "gemini-2.5-flash-lite"
        return "gemini-2.5-flash" if "flash" in name else "gemini-2.5-pro"
    if name.startswith(("gemini-2.0", "gemini-1.", "gemini-pro", "gemma")):
        return "gemini-old"
    return "gemini-2.5-flash"


def gemini(r: ir.Reasoning, model: str, dialect: str = "chat") -> dict[str, Any]:
    """``generationConfig.thinkingConfig`` fields (without includeThoughts); {} = leave
    the model's default."""
    family = gemini_family(model)
    effort = _effort(r)
    if effort is None:
        return {}
    if family == "gemini-old":
        if effort == "none":
            return {}
        raise InvalidRequest(
            f"model {model!r} has no thinking; remove {_param(r, dialect)}",
            param=_param(r, dialect),
        )
    if family in GEMINI_3_LEVELS:
        return {"thinkingLevel": GEMINI_3_LEVELS[family][effort]}
    low, high, can_off = GEMINI_25_RANGES[family]
    budget = r.budget_tokens if r.budget_tokens is not None else BUDGET[effort]
    if budget <= 0:
        return {"thinkingBudget": 0 if can_off else low}
    return {"thinkingBudget": min(max(budget, low), high)}


# ---------------------------------------------------------------- Claude

#: Effort → thinking.budget_tokens ("none" sends no thinking).
CLAUDE_BUDGET: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
}
CLAUDE_MIN_BUDGET = 1024
_CLAUDE_NO_THINKING = ("claude-3-5", "claude-3-opus", "claude-3-haiku", "claude-3-sonnet")


def claude_thinks(model: str) -> bool:
    """Claude 3.7 and every Claude 4+ model have extended thinking; older ones do not."""
    return not model.lower().rsplit("/", 1)[-1].startswith(_CLAUDE_NO_THINKING)


def claude(
    r: ir.Reasoning, model: str, client_max: int | None, default_max: int, dialect: str = "chat"
) -> tuple[dict[str, Any] | None, int]:
    """(``thinking`` or None, ``max_tokens``).

    A budget below Anthropic's minimum is raised to 1024. When the client set no
    max_tokens, ``max_tokens`` becomes the default answer room plus the budget (OpenAI
    counts reasoning inside the completion budget). When it did, that is a cap on what
    the client pays for: the budget is clamped below it, and a max_tokens too small for
    the minimum budget is a 400 naming max_tokens."""
    effort = r.effort
    if r.budget_tokens is not None:
        budget: int | None = r.budget_tokens if r.budget_tokens > 0 else None
    elif effort is None or effort == "none":
        budget = None
    else:
        budget = CLAUDE_BUDGET[effort]
    if budget is None:
        return None, client_max if client_max is not None else default_max
    if not claude_thinks(model):
        raise InvalidRequest(
            f"model {model!r} has no extended thinking; remove {_param(r, dialect)}",
            param=_param(r, dialect),
        )
    budget = max(budget, CLAUDE_MIN_BUDGET)
    if client_max is None:
        return {"type": "enabled", "budget_tokens": budget}, default_max + budget
    if client_max <= CLAUDE_MIN_BUDGET:
        raise InvalidRequest(
            f"with {_param(r, dialect)} set, max_tokens must be greater than "
            f"{CLAUDE_MIN_BUDGET} (Anthropic's minimum thinking budget)",
            param="max_tokens",
        )
    return {"type": "enabled", "budget_tokens": min(budget, client_max - 1)}, client_max


# ---------------------------------------------------------------- Ollama

#: Effort → think for models that take levels (gpt-oss; it cannot be turned off).
OLLAMA_LEVELS: dict[str, str] = {
    "none": "low",
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}


def ollama_levels(model: str) -> bool:
    return model.lower().rsplit("/", 1)[-1].startswith("gpt-oss")


def ollama(r: ir.Reasoning, model: str) -> bool | str | None:
    """``think``: a level for gpt-oss, else true / false; None = leave the default."""
    effort = _effort(r)
    if effort is None:
        return None
    if ollama_levels(model):
        return OLLAMA_LEVELS[effort]
    return effort != "none"


# ---------------------------------------------------------------- OpenAI-compatible


def openai_effort(r: ir.Reasoning) -> ir.ReasoningEffort | None:
    """``reasoning_effort`` for an OpenAI-compatible upstream (a budget as its effort)."""
    return _effort(r)


# ---------------------------------------------------------------- README


COLUMNS = (
    ("Gemini 2.5 Pro `thinkingBudget`", lambda r: gemini(r, "gemini-2.5-pro")["thinkingBudget"]),
    (
        "Gemini 2.5 Flash `thinkingBudget`",
        lambda r: gemini(r, "gemini-2.5-flash")["thinkingBudget"],
    ),
    (
        "Gemini 2.5 Flash-Lite `thinkingBudget`",
        lambda r: gemini(r, "gemini-2.5-flash-lite")["thinkingBudget"],
    ),
    ("Gemini 3 Pro `thinkingLevel`", lambda r: gemini(r, "gemini-3-pro")["thinkingLevel"]),
    ("Gemini 3 Flash `thinkingLevel`", lambda r: gemini(r, "gemini-3-flash")["thinkingLevel"]),
    (
        "Claude `thinking.budget_tokens`",
        lambda r: (claude(r, "claude-sonnet-4-5", None, 4096)[0] or {}).get("budget_tokens", "off"),
    ),
    ("Ollama `think`", lambda r: ollama(r, "qwen3")),
    ("Ollama gpt-oss `think`", lambda r: ollama(r, "gpt-oss")),
)


def markdown() -> str:
    """The README table, computed by calling the functions above."""
    head = "| effort | " + " | ".join(name for name, _ in COLUMNS) + " |"
    rule = "|---|" + "---|" * len(COLUMNS)
    rows = []
    for effort in EFFORTS:
        r = ir.Reasoning(effort=effort)
        values = [fn(r) for _, fn in COLUMNS]
        cells = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
        rows.append(f"| `{effort}` | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])
