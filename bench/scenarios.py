"""Scenarios, request bodies and the response checks, shared by the driver and the stubs.

Every answer is checked against what the fake upstream was told to send (the
model name encodes it), so a fast wrong answer cannot score: JSON bodies must
carry the full text (or both tool calls) and usage; streams must carry every
chunk's text in order, end with ``[DONE]`` (or the dialect's own end marker
when talking to an upstream directly) and hold no error event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

_SHAPE = re.compile(r"n(\d+)-g(\d+)")

# (id, name, arguments) of the two parallel tool calls every "tools" answer carries.
TOOL_CALLS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("call_bench_0", "get_weather", {"city": "Paris", "unit": "celsius"}),
    ("call_bench_1", "get_time", {"timezone": "Europe/Paris"}),
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"bench tool {name}",
            "parameters": {
                "type": "object",
                "properties": {k: {"type": "string"} for k in args},
                "required": list(args),
            },
        },
    }
    for _, name, args in TOOL_CALLS
]


def fragments(text: str, n: int) -> list[str]:
    """Split ``text`` into about ``n`` arbitrary pieces (how tool arguments stream)."""
    n = max(1, min(n, len(text)))
    step = -(-len(text) // n)
    return [text[i : i + step] for i in range(0, len(text), step)]


@dataclass(frozen=True, slots=True)
class Shape:
    """What the fake upstream answers for a model name like ``fake-n20-g5-tools``."""

    model: str
    chunks: int
    gap_ms: int
    tools: bool

    @staticmethod
    def parse(model: str) -> Shape:
        m = _SHAPE.search(model)
        chunks, gap = (int(m.group(1)), int(m.group(2))) if m else (20, 0)
        return Shape(model, max(chunks, 1), gap, model.endswith("-tools"))

    @property
    def words(self) -> list[str]:
        return [f"w{i} " for i in range(self.chunks)]

    @property
    def text(self) -> str:
        return "".join(self.words)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    dialect: str  # openai | gemini | anthropic | vertex-anthropic | ollama
    stream: bool
    upstream_model: str  # encodes the answer's shape, see Shape
    levels: tuple[int, ...] = (1, 16, 64, 256)
    prompt_bytes: int = 0
    kind: str = "load"  # load | slow (many open streams, memory per stream)
    streams: int = 0  # kind == "slow": how many at once
    backends: int = 1  # > 1: round robin over that many backends of this dialect
    note: str = ""
    quick_levels: tuple[int, ...] = (1, 64)
    # the client dialect: chat (/v1/chat/completions) | messages (/v1/messages)
    # | responses (/v1/responses) | embeddings (/v1/embeddings); see bench/apis.py
    client: str = "chat"
    agent: bool = False  # messages: a coding agent's body (agent_body: 24 tools, ≈ 116 KB)

    @property
    def shape(self) -> Shape:
        return Shape.parse(self.upstream_model)

    @property
    def gateway_model(self) -> str:
        """The model name clients send; the gateway's modelMapping renames it upstream (the
        default configuration of a real deployment: clients name an alias, not the provider's
        model id), so every scenario pays for the rename."""
        prefix = "rr" if self.backends > 1 else self.dialect
        return f"{prefix}-{self.upstream_model}"

    @property
    def tools(self) -> bool:
        return self.shape.tools


def all_scenarios() -> list[Scenario]:
    out = [
        Scenario(
            "openai-json",
            "openai",
            False,
            "fake-n20-g0",
            levels=(1, 16, 64, 256, 1024),
            quick_levels=(1, 64, 1024),
            note="pass-through, renamed model",
        ),
        Scenario(
            "openai-stream",
            "openai",
            True,
            "fake-n20-g0",
            levels=(1, 16, 64, 256, 1024),
            note="pass-through, renamed model, 20 chunks",
        ),
    ]
    for d in ("gemini", "anthropic", "vertex-anthropic", "ollama"):
        out.append(Scenario(f"{d}-json", d, False, "fake-n20-g0", note="translation"))
        out.append(Scenario(f"{d}-stream", d, True, "fake-n20-g0", note="translation, 20 chunks"))
    # Per-chunk cost (issue 20, bench/chunkcost.py): the same streams with 220 chunks; CPU per
    # request at 220 minus at 20, over 200, is what one more chunk costs.
    for d in ("openai", "gemini", "anthropic"):
        out.append(
            Scenario(
                f"{d}-stream-220",
                d,
                True,
                "fake-n220-g0",
                levels=(64,),
                quick_levels=(64,),
                note=f"{'pass-through' if d == 'openai' else 'translation'}, 220 chunks",
            )
        )
    out += [
        Scenario(
            "openai-tools-stream",
            "openai",
            True,
            "fake-n20-g0-tools",
            levels=(1, 64),
            note="2 parallel tool calls, argument fragments",
        ),
        Scenario(
            "anthropic-tools-stream",
            "anthropic",
            True,
            "fake-n20-g0-tools",
            levels=(1, 64),
            note="2 parallel tool calls, translated",
        ),
        # Anthropic Messages clients (Claude Code): native relay to Anthropic, translated to Gemini.
        Scenario(
            "messages-anthropic-json",
            "anthropic",
            False,
            "fake-n20-g0",
            levels=(1, 64),
            client="messages",
            note="Messages → Anthropic, native relay",
        ),
        Scenario(
            "messages-agent-json",
            "anthropic",
            False,
            "fake-n20-g0",
            levels=(1, 16),
            quick_levels=(1,),
            client="messages",
            agent=True,
            note="Messages → Anthropic, native relay, a coding agent's 116 KB body",
        ),
        Scenario(
            "messages-anthropic-stream",
            "anthropic",
            True,
            "fake-n20-g0",
            levels=(1, 64),
            client="messages",
            note="Messages → Anthropic, native relay, 20 chunks",
        ),
        Scenario(
            "messages-gemini-json",
            "gemini",
            False,
            "fake-n20-g0",
            levels=(1, 64),
            client="messages",
            note="Messages → Gemini, translated",
        ),
        Scenario(
            "messages-gemini-stream",
            "gemini",
            True,
            "fake-n20-g0",
            levels=(1, 64),
            client="messages",
            note="Messages → Gemini, translated, 20 chunks",
        ),
        # OpenAI Responses clients (Codex): native relay to an openai backend with
        # nativeResponses (its models end in -native), translated to Gemini.
        Scenario(
            "responses-openai-json",
            "openai",
            False,
            "fake-n20-g0-native",
            levels=(1, 64),
            client="responses",
            note="Responses → OpenAI, native relay",
        ),
        Scenario(
            "responses-openai-stream",
            "openai",
            True,
            "fake-n20-g0-native",
            levels=(1, 64),
            client="responses",
            note="Responses → OpenAI, native relay, 20 chunks",
        ),
        Scenario(
            "responses-gemini-json",
            "gemini",
            False,
            "fake-n20-g0",
            levels=(1, 64),
            client="responses",
            note="Responses → Gemini, translated",
        ),
        Scenario(
            "responses-gemini-stream",
            "gemini",
            True,
            "fake-n20-g0",
            levels=(1, 64),
            client="responses",
            note="Responses → Gemini, translated, 20 chunks",
        ),
        # Embeddings: byte relay to an openai backend; n<N> = N inputs, 8 dims each.
        Scenario(
            "embeddings-1",
            "openai",
            False,
            "fake-n1-g0-embed",
            levels=(1, 64),
            client="embeddings",
            note="1 input, byte relay",
        ),
        Scenario(
            "embeddings-100",
            "openai",
            False,
            "fake-n100-g0-embed",
            levels=(1, 64),
            client="embeddings",
            note="100 inputs, byte relay",
        ),
        Scenario(
            "openai-stream-paced",
            "openai",
            True,
            "fake-n20-g5",
            levels=(1, 64),
            note="5 ms between chunks: forwarded one by one?",
        ),
        Scenario(
            "prompt-1mb",
            "openai",
            False,
            "fake-n20-g0",
            levels=(1, 16),
            quick_levels=(1,),
            prompt_bytes=1_000_000,
            note="1 MB prompt",
        ),
        Scenario(
            "routing-rr3",
            "openai",
            False,
            "fake-n20-g0",
            levels=(1, 64, 256),
            backends=3,
            note="3 backends round robin",
        ),
        Scenario(
            "slow-streams-1000",
            "openai",
            True,
            "fake-n10-g300",
            levels=(1000,),
            quick_levels=(300,),
            kind="slow",
            streams=1000,
            note="1,000 open streams, 300 ms between chunks",
        ),
    ]
    return out


# -- request bodies ----------------------------------------------------------------------


def prompt_text(sc: Scenario) -> str:
    if sc.prompt_bytes:
        return ("lorem ipsum " * (sc.prompt_bytes // 12 + 1))[: sc.prompt_bytes]
    return "Say hello in twenty words."


# A realistic small chat request (≈ 1 KB on the wire, issue 20): a system prompt with
# quotes, a newline and a non-ASCII character (JSON escapes), one earlier exchange, the
# question, and the sampling parameters clients usually send.
SYSTEM_PROMPT = (
    'You are a helpful assistant for the "Acme Travel" support desk. Answer briefly and '
    "politely, in the customer's language. Never promise refunds; point to the booking page "
    "instead.\nIf the customer asks about prices, say that they depend on the date and "
    "the route, and offer to look up a concrete itinerary. Use metric units. Sign off as "
    "Zoë from Acme."
)
HISTORY = [
    {"role": "user", "content": "Hi! I booked a train from Paris to Lyon for next Friday."},
    {
        "role": "assistant",
        "content": "Hello! Thanks for booking with Acme Travel. How can I help with your "
        "trip from Paris to Lyon?",
    },
    {
        "role": "user",
        "content": "The train leaves at 08:12 — can I move it to a later one the same day, "
        "and do I keep my seat reservation (car 7, seat 42)?",
    },
    {
        "role": "assistant",
        "content": "Yes: same-day changes are free up to 30 minutes before departure. Your "
        "seat is released and a new one is assigned on the later train.",
    },
]


def chat_messages(sc: Scenario) -> list[dict[str, Any]]:
    if sc.prompt_bytes:
        return [{"role": "user", "content": prompt_text(sc)}]
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        *HISTORY,
        {"role": "user", "content": prompt_text(sc)},
    ]


def openai_body(sc: Scenario, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": chat_messages(sc),
        "max_tokens": 64,
        "temperature": 0.7,
        "top_p": 1,
        "user": "bench-user-0042",
    }
    if sc.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if sc.tools:
        body["tools"] = TOOLS
    return body


def messages_body(sc: Scenario, model: str) -> dict[str, Any]:
    """What an Anthropic SDK client sends to the gateway's /v1/messages."""
    if sc.agent:
        return agent_body(model, sc.stream)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt_text(sc)}],
    }
    if sc.stream:
        body["stream"] = True
    return body


def _agent_tool(i: int) -> dict[str, Any]:
    # Claude Code's tools: a long prose description with examples (≈ 2.6 KB), a JSON
    # Schema with $schema, enums, nested objects and descriptions (≈ 650 bytes).
    para = (
        f"Tool {i} of the bench agent. Use it when the task asks for step {i}; never for "
        'anything else. Quote paths with spaces ("like this") and prefer absolute paths.\n'
        "- Check the result before going on.\n- Report what failed, with the exact error.\n"
    )
    return {
        "name": f"Tool{i}",
        "description": para * 12,
        "input_schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": f"What tool {i} runs"},
                "timeout": {"type": "number", "description": "Milliseconds, at most 600000"},
                "mode": {"type": "string", "enum": ["fast", "safe", "dry-run"]},
                "options": {
                    "type": "object",
                    "properties": {
                        "cwd": {"type": "string"},
                        "env": {"type": "object", "additionalProperties": {"type": "string"}},
                        "retries": {"type": "integer", "minimum": 0, "maximum": 5},
                    },
                    "additionalProperties": False,
                },
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    }


def agent_body(model: str, stream: bool) -> dict[str, Any]:
    """A coding agent's second turn, shaped like Claude Code's (system blocks with cache
    marks, 24 tools, thinking, a tool call and its result; our own text): ≈ 116 KB."""
    rules = "Follow the project's conventions; run the tests before saying a change works.\n"
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 64,
        "system": [
            {"type": "text", "text": "x-bench-billing: agent"},
            {
                "type": "text",
                "text": rules * 340,
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "tools": [_agent_tool(i) for i in range(24)],
        "metadata": {"user_id": orjson.dumps({"session_id": "bench-session-0001"}).decode()},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Run the tests and fix what fails."}],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "thinking",
                        "thinking": "Run them first.",
                        "signature": "c2lnLWJlbmNo",
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_bench_1",
                        "name": "Tool0",
                        "input": {"command": "make test", "mode": "safe"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_bench_1",
                        "content": "ok: 120 passed\n" * 200,
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
    }
    if stream:
        body["stream"] = True
    return body


def native_request(sc: Scenario) -> tuple[str, dict[str, Any]]:
    """(path, body) to ask the fake upstream directly in its own dialect."""
    m = sc.upstream_model
    msgs = chat_messages(sc)
    if sc.dialect == "openai":
        return "/v1/chat/completions", openai_body(sc, m)
    if sc.dialect == "gemini":
        verb = "streamGenerateContent?alt=sse" if sc.stream else "generateContent"
        body: dict[str, Any] = {
            "contents": [{"role": "user", "parts": [{"text": prompt_text(sc)}]}],
            "generationConfig": {"maxOutputTokens": 64},
        }
        return f"/v1beta/models/{m}:{verb}", body
    system = [x["content"] for x in msgs if x["role"] == "system"]
    turns = [x for x in msgs if x["role"] != "system"]
    if sc.dialect == "anthropic":
        body = {"model": m, "max_tokens": 64, "messages": turns, "stream": sc.stream}
        return "/v1/messages", {**body, "system": system[0]} if system else body
    if sc.dialect == "vertex-anthropic":
        verb = "streamRawPredict" if sc.stream else "rawPredict"
        path = f"/v1/projects/bench/locations/us-central1/publishers/anthropic/models/{m}:{verb}"
        body = {
            "anthropic_version": "vertex-2023-10-16",
            "max_tokens": 64,
            "messages": turns,
            "stream": sc.stream,
        }
        return path, {**body, "system": system[0]} if system else body
    if sc.dialect == "ollama":
        return "/api/chat", {"model": m, "messages": msgs, "stream": sc.stream}
    raise ValueError(sc.dialect)


# -- checks ------------------------------------------------------------------------------


@dataclass(slots=True)
class Collected:
    text: str = ""
    calls: dict[int, list[str]] = field(default_factory=dict)  # index → [id, name, args]
    finished: bool = False
    usage: int = 0
    error: str | None = None


def _expect(sc: Scenario, got: Collected, streamed: bool) -> str | None:
    if got.error:
        return got.error
    shape = sc.shape
    if shape.tools:
        if len(got.calls) != len(TOOL_CALLS):
            return f"expected {len(TOOL_CALLS)} tool calls, got {len(got.calls)}"
        ids = set()
        for i, (_, name, args) in enumerate(TOOL_CALLS):
            call = got.calls.get(i)
            if call is None or call[1] != name:
                return f"tool call {i} missing or misnamed"
            try:
                if orjson.loads(call[2]) != args:
                    return f"tool call {i} arguments differ"
            except orjson.JSONDecodeError:
                return f"tool call {i} arguments are not JSON: {call[2][:80]!r}"
            ids.add(call[0])
        if len(ids) != len(TOOL_CALLS) or "" in ids:
            return "tool call ids missing or not distinct"
    elif got.text != shape.text:
        return f"text differs: {got.text[:60]!r}"
    if not got.finished:
        return "incomplete: no end marker" if streamed else "no finish reason"
    if not streamed and not got.usage:
        return "no usage"
    return None


def _openai_delta(got: Collected, obj: dict[str, Any]) -> None:
    if "error" in obj:
        got.error = f"error event: {str(obj['error'])[:120]}"
        return
    choices = obj.get("choices")
    if obj.get("usage"):
        got.usage += 1
    if not choices:
        return
    ch = choices[0]
    delta = ch.get("delta") or {}
    content = delta.get("content")
    if content:
        got.text += content
    for tc in delta.get("tool_calls") or ():
        call = got.calls.setdefault(tc.get("index", 0), ["", "", ""])
        if tc.get("id"):
            call[0] = tc["id"]
        fn = tc.get("function") or {}
        if fn.get("name"):
            call[1] = fn["name"]
        call[2] += fn.get("arguments") or ""


def check_openai(sc: Scenario, body: bytes) -> str | None:
    """Check what a gateway (or the OpenAI stub) answered, JSON or SSE."""
    got = Collected()
    if not sc.stream:
        try:
            obj = orjson.loads(body)
            msg = obj["choices"][0]["message"]
            got.text = msg.get("content") or ""
            for i, tc in enumerate(msg.get("tool_calls") or ()):
                fn = tc["function"]
                got.calls[i] = [tc.get("id") or "", fn["name"], fn["arguments"]]
            got.finished = bool(obj["choices"][0].get("finish_reason"))
            got.usage = 1 if obj.get("usage") else 0
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            return f"bad JSON answer ({exc.__class__.__name__}): {body[:100]!r}"
        return _expect(sc, got, False)
    events = body.replace(b"\r\n", b"\n").split(b"\n\n")
    payloads = [e[6:] if e.startswith(b"data: ") else e for e in events if e.strip()]
    if not payloads or payloads[-1] != b"[DONE]":
        return "stream does not end with [DONE]"
    for p in payloads[:-1]:
        if not p.startswith(b"{"):
            if p.startswith((b":", b"event:")):
                continue
            return f"odd SSE event {p[:60]!r}"
        try:
            _openai_delta(got, orjson.loads(p))
        except orjson.JSONDecodeError:
            return f"bad chunk JSON {p[:60]!r}"
        if got.error:
            return got.error
    got.finished = True
    err = _expect(sc, got, True)
    if err is None and got.usage != 1:
        return f"expected one usage chunk, got {got.usage}"
    return err


def check_native(sc: Scenario, body: bytes) -> str | None:
    """Check an answer read straight from the fake upstream in its own dialect."""
    if sc.dialect == "openai":
        return check_openai(sc, body)
    got = Collected()
    try:
        if sc.dialect == "gemini":
            objs = (
                [orjson.loads(e[6:]) for e in body.split(b"\r\n\r\n") if e.startswith(b"data: ")]
                if sc.stream
                else [orjson.loads(body)]
            )
            for o in objs:
                cand = o["candidates"][0]
                for part in cand["content"]["parts"]:
                    if "text" in part:
                        got.text += part["text"]
                    if "functionCall" in part:
                        fc = part["functionCall"]
                        call = [f"g{len(got.calls)}", fc["name"], orjson.dumps(fc["args"]).decode()]
                        got.calls[len(got.calls)] = call
                got.finished = got.finished or bool(cand.get("finishReason"))
                got.usage = 1 if o.get("usageMetadata") else got.usage
        elif sc.dialect in ("anthropic", "vertex-anthropic"):
            _anthropic(sc, body, got)
        else:
            _ollama(sc, body, got)
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        return f"bad {sc.dialect} answer ({exc.__class__.__name__}): {body[:100]!r}"
    return _expect(sc, got, sc.stream)


def check_messages(sc: Scenario, body: bytes) -> str | None:
    """Check a gateway's /v1/messages answer (Message JSON, or the Messages event stream
    ending with message_stop and carrying usage in message_delta)."""
    got = Collected()
    try:
        _anthropic(sc, body, got)
        if sc.stream:
            got.usage = body.count(b'"message_delta"') if b'"output_tokens"' in body else 0
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        return f"bad Messages answer ({exc.__class__.__name__}): {body[:100]!r}"
    err = _expect(sc, got, sc.stream)
    if err is None and sc.stream and got.usage != 1:
        return f"expected one message_delta with usage, got {got.usage}"
    return err


def _anthropic(sc: Scenario, body: bytes, got: Collected) -> None:
    if not sc.stream:
        o = orjson.loads(body)
        for i, block in enumerate(o["content"]):
            if block["type"] == "text":
                got.text += block["text"]
            elif block["type"] == "tool_use":
                got.calls[i] = [block["id"], block["name"], orjson.dumps(block["input"]).decode()]
        got.finished = bool(o.get("stop_reason"))
        got.usage = 1 if o.get("usage") else 0
        return
    for ev in body.split(b"\n\n"):
        line = next((x for x in ev.split(b"\n") if x.startswith(b"data: ")), None)
        if line is None:
            continue
        o = orjson.loads(line[6:])
        kind = o["type"]
        if kind == "content_block_start" and o["content_block"]["type"] == "tool_use":
            b = o["content_block"]
            got.calls[o["index"]] = [b["id"], b["name"], ""]
        elif kind == "content_block_delta":
            d = o["delta"]
            if d["type"] == "text_delta":
                got.text += d["text"]
            elif d["type"] == "input_json_delta":
                got.calls[o["index"]][2] += d["partial_json"]
        elif kind == "message_stop":
            got.finished = True
        elif kind == "error":
            got.error = f"error event: {o}"


def _ollama(sc: Scenario, body: bytes, got: Collected) -> None:
    lines = body.split(b"\n") if sc.stream else [body]
    for line in lines:
        if not line.strip():
            continue
        o = orjson.loads(line)
        msg = o.get("message") or {}
        got.text += msg.get("content") or ""
        for tc in msg.get("tool_calls") or ():
            fn = tc["function"]
            call = [f"o{len(got.calls)}", fn["name"], orjson.dumps(fn["arguments"]).decode()]
            got.calls[len(got.calls)] = call
        if o.get("done"):
            got.finished = True
            got.usage = 1
