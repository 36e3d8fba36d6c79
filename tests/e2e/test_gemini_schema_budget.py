"""Gemini schema cleaning is bounded: a ``$ref`` DAG that would expand exponentially is a
400 naming the tool, at once, while other requests carry on; real tool sets still clean.

Official openai SDK → real gateway → fake Gemini server.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from aiohttp import web

from chromagent_proxy.backends.gemini.schema_clean import (
    MAX_NODES,
    Budget,
    SchemaTooLarge,
    to_gemini_schema,
)
from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream, json_reply

MSG: Any = [{"role": "user", "content": "hi"}]
ANSWER = {
    "candidates": [
        {"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
}


def ref_dag(levels: int) -> dict[str, Any]:
    """Each definition uses the next one twice: 2**levels nodes once inlined, ~100 bytes a level."""
    defs: dict[str, Any] = {
        f"d{i}": {
            "type": "object",
            "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"}, "b": {"$ref": f"#/$defs/d{i + 1}"}},
        }
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "string"}
    return {"type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}}, "$defs": defs}


def tool(name: str, parameters: dict[str, Any]) -> Any:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "backends": [{"id": "g", "type": "gemini", "apiKey": "k", "baseUrl": f"{up.url}/v1beta"}],
        "defaultBackend": "g",
    }


async def test_ref_dag_is_a_400_naming_the_tool_and_other_requests_carry_on(
    upstream: FakeUpstream,
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        started.set()
        await release.wait()
        return web.json_response(ANSWER)

    upstream.route("*", slow)
    schema = ref_dag(24)  # 2**24 nodes inlined: minutes of CPU and gigabytes without a budget
    async with run_gateway(config(upstream)) as gw:
        client = sdk(gw)
        # Another client's request is in flight (waiting on its upstream) meanwhile.
        other = asyncio.create_task(
            client.chat.completions.create(model="gemini-2.5-flash", messages=MSG)
        )
        await started.wait()
        with pytest.raises(openai.BadRequestError) as exc:
            await client.chat.completions.create(
                model="gemini-2.5-flash",
                messages=MSG,
                tools=[tool("ok_tool", {"type": "object"}), tool("dag_tool", schema)],
            )
        err = exc.value.body
        assert isinstance(err, dict)
        assert err["param"] == "tools[1].function.parameters"
        assert err["code"] == "schema_too_large"
        assert "'dag_tool'" in err["message"] and str(MAX_NODES) in err["message"]
        # The refused request never reached the upstream; the other one is still waiting
        # there and completes normally once its upstream answers.
        assert len(upstream.received) == 1
        assert not other.done()
        release.set()
        answer = await other
        assert answer.choices[0].message.content == "ok"

        # The same DAG as a response_format schema is refused the same way.
        upstream.route("*", json_reply(ANSWER))
        with pytest.raises(openai.BadRequestError) as exc:
            await client.chat.completions.create(
                model="gemini-2.5-flash",
                messages=MSG,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "out", "schema": schema},
                },
            )
        assert isinstance(exc.value.body, dict)
        assert exc.value.body["param"] == "response_format.json_schema.schema"
        assert len(upstream.received) == 1


# A Claude Code style tool set: $ref/$defs, anyOf with null, additionalProperties, formats.
TODO_WRITE: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": False,
    "$defs": {
        "Todo": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "content": {"type": "string", "minLength": 1},
                "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                "due": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
                "url": {"type": "string", "format": "uri"},
                "meta": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["content", "status"],
        }
    },
    "properties": {
        "todos": {"type": "array", "items": {"$ref": "#/$defs/Todo"}, "description": "The list"},
        "previous": {"type": "array", "items": {"$ref": "#/$defs/Todo"}},
    },
    "required": ["todos"],
}


async def test_claude_code_style_tools_still_clean_and_reach_gemini(
    upstream: FakeUpstream,
) -> None:
    upstream.route("*", json_reply(ANSWER))
    todo = {
        "type": "OBJECT",
        "properties": {
            "content": {"type": "STRING", "minLength": 1},
            "status": {"type": "STRING", "enum": ["pending", "in_progress", "completed"]},
            "due": {"type": "STRING", "format": "date-time", "nullable": True},
            "url": {"type": "STRING", "description": "format: uri"},
            "meta": {"type": "OBJECT", "description": "an object with any keys; values: string"},
        },
        "required": ["content", "status"],
    }
    # Forty such tools (a big MCP tool set) fit the budget comfortably.
    tools = [tool(f"todo_write_{i}", TODO_WRITE) for i in range(40)]
    async with run_gateway(config(upstream)) as gw:
        answer = await sdk(gw).chat.completions.create(
            model="gemini-2.5-flash", messages=MSG, tools=tools
        )
    assert answer.choices[0].message.content == "ok"
    decls = upstream.received[0].json["tools"][0]["functionDeclarations"]
    assert len(decls) == 40
    assert decls[7]["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "todos": {"type": "ARRAY", "items": todo, "description": "The list"},
            "previous": {"type": "ARRAY", "items": todo},
        },
        "required": ["todos"],
    }


def test_cycles_end_and_the_budget_is_shared_by_a_requests_schemas() -> None:
    # A cycle through two definitions is inlined once and then left open, not followed.
    cyclic = {
        "$defs": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/$defs/B"}}},
            "B": {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}},
        },
        "$ref": "#/$defs/A",
    }
    out = to_gemini_schema(cyclic)
    assert out["properties"]["b"]["properties"]["a"] == {"type": "OBJECT"}
    # Two schemas that each fit alone do not fit one shared budget together.
    budget = Budget(limit=3000)
    half = ref_dag(8)  # ~1,020 units: 511 nodes and as many $ref hops
    to_gemini_schema(half, budget)
    to_gemini_schema(half, budget)
    with pytest.raises(SchemaTooLarge):
        to_gemini_schema(half, budget)
    # An exponential DAG is sized in linear time and refused before any of it is expanded.
    budget = Budget()
    with pytest.raises(SchemaTooLarge):
        to_gemini_schema(ref_dag(200), budget)
    assert budget.left == budget.limit
    # A long $ref chain (no fan-out) costs one unit per hop, not per copy of the chain.
    chain = {
        "$defs": {f"c{i}": {"$ref": f"#/$defs/c{i + 1}"} for i in range(100)}
        | {"c100": {"type": "string"}},
        "$ref": "#/$defs/c0",
    }
    assert to_gemini_schema(chain) == {"type": "STRING"}
