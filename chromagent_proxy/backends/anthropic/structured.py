"""``response_format`` on Claude: the native structured-output field where the model has it,
the forced-tool mapping where it does not.

Native (``output_config.format: {type: "json_schema", schema}``, wire-formats.md §2.2)
constrains the answer text itself and, unlike a forced tool call, also works while
extended thinking is on (the API refuses ``tool_choice`` any/tool with thinking). Which
models have it (Anthropic structured-outputs docs, GA; Vertex AI "Structured outputs with
Anthropic Claude models"): on the Claude API every Claude 4.5 model and later (Opus 4.5,
Sonnet 4.5, Haiku 4.5, 4.6, …); on Vertex AI Claude 4.6 and later. ``json_object`` has
no native equivalent (a schema is required), so it always uses the forced tool.
"""

from __future__ import annotations

import re
from typing import Any

from chromagent_proxy.core import ir

_VERSION = re.compile(r"claude-(?:opus|sonnet|haiku)-(\d+)(?:[-.](\d{1,2}))?(?!\d)")


def claude_version(model: str) -> tuple[int, int] | None:
    """(major, minor) of a Claude 4+-style name (``claude-sonnet-4-5@2025…`` → (4, 5),
    ``claude-opus-4-20250514`` → (4, 0)); None for other names."""
    m = _VERSION.search(model.lower())
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2) or 0)


def native(model: str, *, vertex: bool) -> bool:
    """Whether ``model`` takes ``output_config.format`` (on Vertex AI when ``vertex``)."""
    version = claude_version(model)
    return version is not None and version >= ((4, 6) if vertex else (4, 5))


def output_config(req: ir.Request, *, vertex: bool) -> dict[str, Any] | None:
    """``output_config`` for a json_schema response_format on a model that has it."""
    rf = req.settings.response_format
    if rf is None or rf.type != "json_schema" or rf.schema is None:
        return None
    if not native(req.model, vertex=vertex):
        return None
    return {"format": {"type": "json_schema", "schema": rf.schema}}
