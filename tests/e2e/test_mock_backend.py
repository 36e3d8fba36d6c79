"""The mock backend's toolCall mode drives an agent loop to its end without API keys."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.gateway import run_gateway, sdk

TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CFG = {
    "backends": [
        {
            "id": "mock",
            "type": "mock",
            "modelMapping": {"echo": "echo"},
            "options": {"toolCall": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        }
    ]
}


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_call_then_text_after_the_tool_result(stream: bool) -> None:
    async with run_gateway(CFG) as gw:
        client = sdk(gw)
        messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        turns: list[str] = []
        for _ in range(5):  # an agent loop: call tools until the model answers with text
            if stream:
                call_id, name, args, text, finish = "", "", "", "", ""
                async with await client.chat.completions.create(
                    model="echo", messages=messages, tools=TOOLS, stream=True
                ) as events:
                    async for ev in events:
                        for ch in ev.choices:
                            for tc in ch.delta.tool_calls or []:
                                call_id = tc.id or call_id
                                name += (tc.function and tc.function.name) or ""
                                args += (tc.function and tc.function.arguments) or ""
                            text += ch.delta.content or ""
                            finish = ch.finish_reason or finish
            else:
                done = await client.chat.completions.create(
                    model="echo", messages=messages, tools=TOOLS
                )
                msg, finish = done.choices[0].message, done.choices[0].finish_reason
                text = msg.content or ""
                call_id, name, args = "", "", ""
                if msg.tool_calls:
                    fn = msg.tool_calls[0].function  # type: ignore[union-attr]
                    call_id, name, args = msg.tool_calls[0].id, fn.name, fn.arguments
            turns.append(finish)
            if finish != "tool_calls":
                break
            assert (name, args) == ("get_weather", '{"city":"Paris"}')
            messages.append(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": args},
                        }
                    ],
                }
            )
            messages.append({"role": "tool", "tool_call_id": call_id, "content": "18 °C, sunny"})
    assert turns == ["tool_calls", "stop"]
    assert text == "The tool returned: 18 °C, sunny"
