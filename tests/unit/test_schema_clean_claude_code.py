"""The tool schemas Claude Code sends (tests/support/claude_code.py has their shapes) become
schemas Gemini accepts, without losing what they mean."""

from __future__ import annotations

import json
from typing import Any

from chromagent_proxy.backends.gemini.schema_clean import to_gemini_schema
from tests.support import claude_code as cc

# Keywords Gemini's Schema subset accepts (wire-formats.md §4.2); anything else is a 400 there.
GEMINI_KEYS = {
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "properties",
    "required",
    "items",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "anyOf",
    "title",
    "propertyOrdering",
}


def keys(node: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(k)
            if k == "properties":
                for sub in v.values():
                    out |= keys(sub)
            elif k in ("items",):
                out |= keys(v)
            elif k == "anyOf":
                for sub in v:
                    out |= keys(sub)
    return out


def cleaned(name: str) -> dict[str, Any]:
    tool = next(t for t in cc.tools() if t["name"] == name)
    return to_gemini_schema(tool["input_schema"])


def test_every_claude_code_tool_schema_uses_only_gemini_keywords() -> None:
    for tool in cc.tools():
        got = to_gemini_schema(tool["input_schema"])
        assert keys(got) <= GEMINI_KEYS, (tool["name"], keys(got) - GEMINI_KEYS)
        assert got["type"] == "OBJECT"
        assert got["required"] == tool["input_schema"]["required"]


def test_meaning_survives() -> None:
    task = cleaned("TaskEdit")
    status = task["properties"]["status"]
    # anyOf [enum, const] → every allowed value is still allowed
    values = {v for branch in status.get("anyOf", [status]) for v in branch.get("enum", [])}
    assert values == {"todo", "doing", "done", "dropped"}
    assert task["properties"]["labels"] == {
        "description": "Labels to add",
        "type": "ARRAY",
        "items": {"type": "STRING"},
    }
    assert task["properties"]["extra"]["type"] == "OBJECT"
    fetch = cleaned("Fetch")
    assert "uri" in fetch["properties"]["url"]["description"]  # an unsupported format becomes words
    replace = cleaned("Replace")
    assert "default: false" in replace["properties"]["all"]["description"]
    plan = cleaned("Plan")
    steps = plan["properties"]["steps"]
    assert steps["minItems"] == 1 and steps["items"]["properties"]["state"]["enum"] == [
        "open",
        "closed",
    ]


def test_refs_are_inlined() -> None:
    schema = {
        "$schema": cc.SCHEMA,
        "type": "object",
        "$defs": {"path": {"type": "string", "description": "An absolute path"}},
        "properties": {"files": {"type": "array", "items": {"$ref": "#/$defs/path"}}},
        "required": ["files"],
        "additionalProperties": False,
    }
    got = to_gemini_schema(schema)
    assert got["properties"]["files"]["items"] == {
        "type": "STRING",
        "description": "An absolute path",
    }
    assert "$ref" not in json.dumps(got) and "$defs" not in json.dumps(got)
