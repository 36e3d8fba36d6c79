"""/v1/responses through the official openai SDK, on the IR path (a scripted IR backend
stands for any translating backend; the provider translators have their own tests):
event grammar, function-tool loops, sealed reasoning state, namespace and hosted tools,
stored responses, WebSocket refusal, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from chromagent_proxy.core import ir
from tests.support.cli_process import start_gateway
from tests.support.gateway import run_gateway, sdk
from tests.support.ir_backend import ScriptedIR, config, registry, text_answer
from tests.support.redis import RedisServer


@pytest.fixture(autouse=True)
def _reset() -> None:
    ScriptedIR.received = []
    ScriptedIR.script = text_answer("hello from the IR backend")


def _tool_call(name: str, args: str, signature: str | None = None, origin: str | None = None):  # type: ignore[no-untyped-def]
    def script(req: ir.Request) -> list[list[ir.Event]]:
        if any(type(p) is ir.ToolResult for m in req.messages for p in m.parts):
            return text_answer("the tool said sunny")(req)
        return [
            [ir.Start()],
            [ir.ToolCallStart(0, "call_abc", name, signature=signature, origin=origin)],
            [ir.ToolCallDelta(0, args[:5])],
            [ir.ToolCallDelta(0, args[5:])],
            [ir.Finish("tool_calls"), ir.Usage(input=20, output=7)],
        ]

    return script


async def test_create_non_stream_and_usage() -> None:
    async with run_gateway(config(), registry()) as gw:
        client = sdk(gw)
        r = await client.responses.create(model="m", input="say hello", instructions="be brief")
        assert r.output_text == "hello from the IR backend"
        assert r.status == "completed" and r.model == "m"
        assert r.usage is not None and r.usage.input_tokens == 10 and r.usage.output_tokens == 5
        req = ScriptedIR.received[0]
        assert req.model == "up-m" and req.dialect == "responses"
        assert req.system is not None and req.system[0].text == "be brief"
        assert isinstance(req.messages[0].parts[0], ir.Text)
        await client.close()


async def test_stream_helper_checks_the_event_grammar() -> None:
    async with run_gateway(config(), registry()) as gw:
        client = sdk(gw)
        types: list[str] = []
        seqs: list[int] = []
        async with client.responses.stream(model="m", input="hi") as stream:
            async for event in stream:
                types.append(event.type)
                seqs.append(event.sequence_number)
            final = await stream.get_final_response()
        assert seqs == list(range(len(seqs)))
        assert types[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert types[-4:] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert final.output_text == "hello from the IR backend"
        assert final.usage is not None and final.usage.total_tokens == 15
        await client.close()


async def test_function_tool_loop() -> None:
    ScriptedIR.script = _tool_call("get_weather", '{"city": "Paris"}')
    tools: list[Any] = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": False,
        }
    ]
    async with run_gateway(config(), registry()) as gw:
        client = sdk(gw)
        async with client.responses.stream(model="m", input="weather?", tools=tools) as stream:
            first = await stream.get_final_response()
        calls = [o for o in first.output if o.type == "function_call"]
        assert len(calls) == 1 and calls[0].arguments == '{"city": "Paris"}'
        assert calls[0].call_id == "call_abc" and calls[0].name == "get_weather"
        history: list[Any] = [
            {"role": "user", "content": "weather?"},
            *[o.model_dump(exclude_none=True) for o in first.output],
            {"type": "function_call_output", "call_id": "call_abc", "output": "sunny"},
        ]
        second = await client.responses.create(model="m", input=history, tools=tools)
        assert second.output_text == "the tool said sunny"
        req = ScriptedIR.received[-1]
        call = next(p for m in req.messages for p in m.parts if isinstance(p, ir.ToolCall))
        result = next(p for m in req.messages for p in m.parts if isinstance(p, ir.ToolResult))
        assert call.id == result.call_id == "call_abc"
        assert call.arguments == '{"city": "Paris"}'
        assert isinstance(result.content[0], ir.Text) and result.content[0].text == "sunny"
        await client.close()


def _thinking_then_text(req: ir.Request) -> list[list[ir.Event]]:
    return [
        [ir.Start()],
        [ir.ThinkingDelta("Let me think. ")],
        [ir.ThinkingDelta("Paris.", signature="sig-anthropic-1", origin="anthropic")],
        [ir.TextDelta("Paris")],
        [ir.Finish("stop"), ir.Usage(input=5, output=2, reasoning=9)],
    ]


async def test_reasoning_state_round_trips_sealed_and_forgeries_are_dropped() -> None:
    ScriptedIR.script = _thinking_then_text
    async with run_gateway(config(), registry()) as gw:
        client = sdk(gw)
        r = await client.responses.create(
            model="m",
            input="capital of France?",
            include=["reasoning.encrypted_content"],
            reasoning={"summary": "auto"},
            store=False,
        )
        reasoning = [o for o in r.output if o.type == "reasoning"]
        assert len(reasoning) == 1
        blob = reasoning[0].encrypted_content
        assert blob and "sig-anthropic-1" not in blob and "Paris" not in blob
        assert reasoning[0].summary[0].text == "Let me think. Paris."
        assert r.usage is not None and r.usage.output_tokens_details.reasoning_tokens == 9
        ScriptedIR.script = text_answer("ok")
        history: list[Any] = [
            {"role": "user", "content": "capital of France?"},
            *[o.model_dump(exclude_none=True) for o in r.output],
            {"role": "user", "content": "and Italy?"},
        ]
        await client.responses.create(model="m", input=history, store=False)
        thinking = [
            p
            for m in ScriptedIR.received[-1].messages
            for p in m.parts
            if isinstance(p, ir.Thinking)
        ]
        assert [(t.text, t.signature, t.origin) for t in thinking] == [
            ("Let me think. Paris.", "sig-anthropic-1", "anthropic")
        ]
        # A tampered or foreign blob is dropped: no thinking reaches the backend, no error.
        forged: Any = dict(history[1], encrypted_content=blob[:-4] + "AAAA")
        replay: list[Any] = [history[0], forged, history[-1]]
        await client.responses.create(model="m", input=replay, store=False)
        assert not any(
            isinstance(p, ir.Thinking) for m in ScriptedIR.received[-1].messages for p in m.parts
        )
        # Without include, the blob does not leave the gateway.
        r2 = await client.responses.create(model="m", input="x", store=False)
        assert all(getattr(o, "encrypted_content", None) is None for o in r2.output)
        await client.close()


async def test_gemini_call_signatures_ride_in_a_reasoning_item() -> None:
    ScriptedIR.script = _tool_call("lookup", '{"q": "abc"}', signature="GEMSIG==", origin="gemini")
    tools: list[Any] = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    async with run_gateway(config(), registry()) as gw:
        client = sdk(gw)
        r = await client.responses.create(
            model="m",
            input="look it up",
            tools=tools,
            include=["reasoning.encrypted_content"],
            stream=False,
        )
        history: list[Any] = [
            {"role": "user", "content": "look it up"},
            *[o.model_dump(exclude_none=True) for o in r.output],
            {"type": "function_call_output", "call_id": "call_abc", "output": "found"},
        ]
        await client.responses.create(model="m", input=history, tools=tools)
        call = next(
            p
            for m in ScriptedIR.received[-1].messages
            for p in m.parts
            if isinstance(p, ir.ToolCall)
        )
        assert (call.signature, call.origin) == ("GEMSIG==", "gemini")
        await client.close()


async def test_namespace_tools_are_flattened_and_split_back_hosted_search_dropped() -> None:
    ScriptedIR.script = _tool_call("agents__spawn", '{"task": "x"}')
    tools: list[Any] = [
        {
            "type": "namespace",
            "name": "agents",
            "description": "sub agents",
            "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object"}}],
        },
        {"type": "web_search", "external_web_access": False},
    ]
    async with run_gateway(config(), registry()) as gw:
        client = sdk(gw)
        raw = await client.responses.with_raw_response.create(model="m", input="go", tools=tools)
        assert raw.headers["x-chromagent-dropped-tools"] == "web_search"
        r = raw.parse()
        call = next(o for o in r.output if o.type == "function_call")
        assert call.name == "spawn"
        assert call.model_dump().get("namespace") == "agents"
        sent = ScriptedIR.received[-1].tools
        assert sent is not None and [t.name for t in sent] == ["agents__spawn"]
        with pytest.raises(openai.BadRequestError) as exc:
            await client.responses.create(
                model="m", input="go", tools=[{"type": "code_interpreter", "container": "auto"}]
            )
        assert exc.value.body["param"] == "tools[0].type"  # type: ignore[index]
        await client.close()
    async with run_gateway(config(responses={"hostedTools": "refuse"}), registry()) as gw:
        client = sdk(gw)
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="m", input="go", tools=[tools[1]])
        await client.close()


async def test_output_limit_is_incomplete() -> None:
    def cut(req: ir.Request) -> list[list[ir.Event]]:
        return [[ir.TextDelta("Hello,")], [ir.Finish("length"), ir.Usage(input=3, output=2)]]

    ScriptedIR.script = cut
    async with run_gateway(config(), registry()) as gw:
        client = sdk(gw)
        async with client.responses.stream(model="m", input="hi", max_output_tokens=2) as s:
            types = [e.type async for e in s]
        assert types[-1] == "response.incomplete"
        r = await client.responses.create(model="m", input="hi", max_output_tokens=2)
        assert r.status == "incomplete" and r.incomplete_details is not None
        assert r.incomplete_details.reason == "max_output_tokens"
        await client.close()


async def test_mid_stream_failure_is_error_then_response_failed() -> None:
    def broken(req: ir.Request) -> list[list[ir.Event]]:
        return [[ir.TextDelta("partial")], [ir.Error("upstream went away")]]

    ScriptedIR.script = broken
    async with run_gateway(config(), registry()) as gw:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{gw.url}/v1/responses", json={"model": "m", "input": "hi", "stream": True}
            ) as r,
        ):
            body = await r.text()
        assert r.status == 200
        events = [line[7:] for line in body.splitlines() if line.startswith("event: ")]
        assert events[-2:] == ["error", "response.failed"]
        assert "upstream went away" in body
        client = sdk(gw)
        with pytest.raises(openai.APIError):
            async with client.responses.stream(model="m", input="hi") as stream:
                async for _ in stream:
                    pass
        await client.close()


async def test_websocket_upgrade_is_refused_at_once() -> None:
    async with run_gateway(config(), registry()) as gw:
        async with aiohttp.ClientSession() as s:
            t = time.perf_counter()
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await s.ws_connect(f"{gw.url}/v1/responses")
            assert time.perf_counter() - t < 5
            assert exc.value.status == 426


async def test_store_previous_response_id_and_retrieval() -> None:
    async with run_gateway(config(), registry()) as gw:
        client = sdk(gw)
        first = await client.responses.create(model="m", input="remember 42", store=True)
        got = await client.responses.retrieve(first.id)
        assert got.id == first.id and got.output_text == first.output_text
        items = await client.responses.input_items.list(first.id)
        assert [i.type for i in items.data] == ["message"]
        ScriptedIR.script = text_answer("it was 42")
        second = await client.responses.create(
            model="m", input="what was it?", previous_response_id=first.id, store=True
        )
        assert second.output_text == "it was 42"
        msgs = ScriptedIR.received[-1].messages
        assert [m.role for m in msgs] == ["user", "assistant", "user"]
        await client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError) as exc:
            await client.responses.create(model="m", input="x", previous_response_id="resp_nope")
        assert exc.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
        # store: false stores nothing.
        third = await client.responses.create(model="m", input="x", store=False)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(third.id)
        await client.close()


async def test_unsupported_state_features_are_400() -> None:
    async with run_gateway(config(), registry()) as gw:
        client = sdk(gw)
        for kw, param in (
            ({"background": True}, "background"),
            ({"conversation": "conv_1"}, "conversation"),
        ):
            with pytest.raises(openai.BadRequestError) as exc:
                await client.responses.create(model="m", input="x", **kw)
            assert exc.value.body["param"] == param  # type: ignore[index]
        await client.close()


@pytest.mark.redis
async def test_previous_response_id_across_two_gateway_processes_sharing_redis(
    tmp_path: Path,
) -> None:
    redis = await RedisServer(tmp_path / "redis").start()
    procs = []
    try:
        cfg = {
            "backends": [
                {
                    "id": "ir",
                    "type": "scripted",
                    "module": "tests.support.ir_backend:ScriptedIR",
                    "modelMapping": {"m": "up-m"},
                }
            ],
            "stateSecret": "test-secret-shared-by-both",
            "responses": {"store": "redis", "redisUrl": redis.url},
        }
        path = tmp_path / "gw.json"
        path.write_text(json.dumps(cfg))
        for name in ("a", "b"):
            procs.append(
                await start_gateway(["--config", str(path), "--port", "0"], tmp_path, name)
            )
        a = openai.AsyncOpenAI(base_url=f"{procs[0].url}/v1", api_key="x", max_retries=0)
        b = openai.AsyncOpenAI(base_url=f"{procs[1].url}/v1", api_key="x", max_retries=0)
        first = await a.responses.create(model="m", input="remember 42", store=True)
        # The other process finds it in Redis: retrieval and continuation.
        got = await b.responses.retrieve(first.id)
        assert got.output_text == first.output_text
        second = await b.responses.create(
            model="m", input="what was it?", previous_response_id=first.id
        )
        assert second.status == "completed"
        items = await b.responses.input_items.list(second.id, order="asc")
        roles = [getattr(i, "role", None) for i in items.data]
        assert roles == ["user", "assistant", "user"]
        await a.close()
        await b.close()
    finally:
        for p in procs:
            await p.close()
        await redis.stop()


def _native_events() -> bytes:
    resp = {"id": "resp_up", "object": "response", "created_at": 1, "status": "in_progress",
            "model": "gpt-5", "output": [], "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": []}  # fmt: skip
    done: dict[str, Any] = {**resp, "status": "completed", "output": [
        {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "native hi", "annotations": []}]}],
        "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4},
                  "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1},
                  "total_tokens": 15}}  # fmt: skip
    events = [
        {"type": "response.created", "sequence_number": 0, "response": resp},
        {"type": "response.in_progress", "sequence_number": 1, "response": resp},
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
         "item": {"id": "msg_1", "type": "message", "status": "in_progress",
                  "role": "assistant", "content": []}},
        {"type": "response.content_part.added", "sequence_number": 3, "item_id": "msg_1",
         "output_index": 0, "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_1",
         "output_index": 0, "content_index": 0, "delta": "native hi"},
        {"type": "response.output_text.done", "sequence_number": 5, "item_id": "msg_1",
         "output_index": 0, "content_index": 0, "text": "native hi"},
        {"type": "response.content_part.done", "sequence_number": 6, "item_id": "msg_1",
         "output_index": 0, "content_index": 0,
         "part": {"type": "output_text", "text": "native hi", "annotations": []}},
        {"type": "response.output_item.done", "sequence_number": 7, "output_index": 0,
         "item": done["output"][0]},
        {"type": "response.completed", "sequence_number": 8, "response": done},
    ]  # fmt: skip
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


async def test_native_responses_relay_to_an_openai_backend() -> None:
    from tests.support.upstream import FakeUpstream, stream_reply

    up = await FakeUpstream().start()
    up.route("/v1/responses", stream_reply(_native_events(), split=50))
    cfg = {
        "backends": [
            {"id": "oa", "type": "openai", "baseUrl": f"{up.url}/v1", "apiKey": "sk-up",
             "nativeResponses": True, "modelMapping": {"gpt": "gpt-5"}}
        ]
    }  # fmt: skip
    try:
        async with run_gateway(cfg) as gw:
            client = sdk(gw)
            async with client.responses.stream(
                model="gpt", input="hi", tools=[{"type": "web_search"}]
            ) as stream:
                final = await stream.get_final_response()
            assert final.output_text == "native hi"
            sent = up.received[0]
            # The client's bytes, only the model renamed; hosted tools pass to OpenAI.
            assert sent.json["model"] == "gpt-5" and sent.json["tools"] == [{"type": "web_search"}]
            assert sent.headers["Authorization"] == "Bearer sk-up"
            await client.close()
            async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as r:
                text = await r.text()
            tokens = [
                line for line in text.splitlines()
                if line.startswith("chromagent_tokens_total") and 'backend="oa"' in line
            ]  # fmt: skip
            assert any('direction="in"' in t and t.endswith(" 12.0") for t in tokens), tokens
    finally:
        await up.close()
