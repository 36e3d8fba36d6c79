"""The one unsupported-parameter policy table for Chat Completions fields.

For each OpenAI request field and each translating backend dialect: ``map`` (translated
to the backend's own control), ``ignore`` (a hint with no backend equivalent that does
not change the answer's shape; documented), or ``refuse`` (400 naming the field). The
``openai`` backend relays Chat Completions as they are, so every field *passes* there.
The README's table is printed from ``TABLE`` (tests/unit/test_policy.py checks it).
Value-level limits (``n`` > 1 on a one-choice backend, ``parallel_tool_calls: false``
where a backend cannot honour it) are checked by each builder with the same wording.
"""

from __future__ import annotations

from typing import Any, Literal

from chromagent_proxy.core.errors import UnsupportedFeature

Action = Literal["map", "ignore", "refuse"]
BACKENDS = ("gemini", "anthropic", "ollama")

M: Action = "map"
G: Action = "ignore"  # iGnore
R: Action = "refuse"

# field: (gemini, anthropic, ollama)
TABLE: dict[str, tuple[Action, Action, Action]] = {
    "messages": (M, M, M),
    "max_tokens": (M, M, M),
    "max_completion_tokens": (M, M, M),
    "temperature": (M, M, M),
    "top_p": (M, M, M),
    "stop": (M, M, M),
    "n": (M, M, M),
    "seed": (M, G, M),
    "presence_penalty": (M, R, M),
    "frequency_penalty": (M, R, M),
    "logprobs": (R, R, R),
    "top_logprobs": (R, R, R),
    "tools": (M, M, M),
    "tool_choice": (M, M, M),
    "parallel_tool_calls": (M, M, M),
    "functions": (M, M, M),
    "function_call": (M, M, M),
    "response_format": (M, M, M),
    "reasoning_effort": (M, M, M),
    "stream": (M, M, M),
    "stream_options": (M, M, M),
    "user": (G, M, G),
    "metadata": (G, G, G),
    "store": (G, G, G),
    "service_tier": (G, G, G),
    "prompt_cache_key": (G, G, G),
    "safety_identifier": (G, G, G),
    "verbosity": (G, G, G),
    "logit_bias": (R, R, R),
    "audio": (R, R, R),
    "modalities": (M, M, M),
    "prediction": (R, R, R),
    "web_search_options": (R, R, R),
}

NOTES: dict[str, str] = {
    "n": "more than 1: Gemini only (candidateCount); 400 elsewhere",
    "parallel_tool_calls": "false: Anthropic only (disable_parallel_tool_use); 400 elsewhere",
    "modalities": 'only ["text"]; any other modality is a 400',
    "functions": "legacy functions become tools",
    "function_call": "legacy function_call becomes tool_choice",
    "seed": "Anthropic has no seed: ignored",
    "user": "Anthropic metadata.user_id",
    "reasoning_effort": "each model's own control, in its range: the reasoning table below",
    "response_format": "Claude 4.5+ output_config.format, else a forced tool: see below",
}

_NAMES = {"gemini": "Gemini", "anthropic": "Anthropic", "ollama": "Ollama"}


def refused(present: dict[str, Any], backend: str) -> None:
    """400 for the first field in ``present`` (name → value, only fields that were set)
    that ``backend`` refuses; unknown backends (openai, custom) take every field."""
    try:
        col = BACKENDS.index(backend)
    except ValueError:
        return
    for name in present:
        row = TABLE.get(name)
        if row is not None and row[col] == "refuse":
            raise UnsupportedFeature(
                f"'{name}' is not supported by {_NAMES[backend]} backends", param=name
            )
    modalities = present.get("modalities")
    if modalities and any(m != "text" for m in modalities):
        raise UnsupportedFeature(
            f"{_NAMES[backend]} backends only return text; 'modalities' must be [\"text\"]",
            param="modalities",
        )


def markdown() -> str:
    """The README table."""
    head = "| field | " + " | ".join(_NAMES[b] for b in BACKENDS) + " | openai | notes |"
    rule = "|---|" + "---|" * (len(BACKENDS) + 2)
    rows = [
        f"| `{name}` | " + " | ".join(row) + f" | pass | {NOTES.get(name, '')} |"
        for name, row in TABLE.items()
    ]
    return "\n".join([head, rule, *rows])
