"""Contract fuzzing against OpenAI's published OpenAPI description.

Requests are generated from ``CreateChatCompletionRequest`` (hypothesis-jsonschema)
and from mutations of valid requests, sent to a real gateway in front of every
backend type (mock, openai relay, ollama, anthropic, gemini — the translators
answer from recorded provider traffic). Whatever the request:

- never a 5xx (the upstreams are healthy, so a 5xx would be a gateway bug);
- every 4xx body validates against ``ErrorResponse``;
- every 2xx body validates against ``CreateChatCompletionResponse``, and every
  stream event against ``CreateChatCompletionStreamResponse`` (or, for an error
  after the first byte, ``ErrorResponse``), the stream ending with ``[DONE]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contract import spec
from tests.contract.harness import MODELS, Reply, ThreadedGateway, recorded
from tests.contract.hypothesis_compat import install

install()
from hypothesis_jsonschema import from_schema  # noqa: E402  (after the compat shim)

RECORDED = recorded()
EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("CONTRACT_RANDOM") is None,  # CI: reproducible; set to explore
)


@pytest.fixture(scope="module")
def gw() -> Iterator[ThreadedGateway]:
    with ThreadedGateway() as g:
        yield g


def _usage_only(event: bytes) -> bool:
    if event == b"[DONE]":
        return False
    chunk = json.loads(event)
    return isinstance(chunk, dict) and chunk.get("choices") == [] and "usage" in chunk


def check(reply: Reply, request: Any = None) -> None:
    """The contract every reply must keep, whatever was sent."""
    where = f"status {reply.status} for request {json.dumps(request)[:600] if request is not None else ''}"
    assert reply.status < 500, f"{where}: {reply.body[:800]!r}"
    if reply.status >= 400:
        errs = spec.errors("ErrorResponse", reply.json())
        assert not errs, f"{where}: error body breaks ErrorResponse: {errs}"
        return
    assert reply.status == 200, where
    if reply.headers.get("x-chromagent-backend") == "openai":
        # The relay passes the upstream's bytes through unchanged (real OpenAI output itself
        # omits ``logprobs`` and sends ``system_fingerprint: null``, which the spec forbids):
        # its contract is identity, not the schema.
        plain, streamed = RECORDED["openai"]
        if reply.headers.get("content-type", "").startswith("text/event-stream"):
            expected = Reply(200, {}, streamed).events()
            opts = request.get("stream_options") if isinstance(request, dict) else None
            if not (isinstance(opts, dict) and opts.get("include_usage")):
                # The gateway always asks the upstream for usage (to count tokens) and keeps
                # the usage-only chunk from clients that did not ask for it.
                expected = [e for e in expected if not _usage_only(e)]
            assert reply.events() == expected, where
        else:
            assert reply.body == plain, where
        return
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        events = reply.events()
        assert events, where
        assert events[-1] == b"[DONE]" or b'"error"' in events[-1], where
        for data in events:
            if data == b"[DONE]":
                continue
            chunk = json.loads(data)
            name = "ErrorResponse" if "error" in chunk else "CreateChatCompletionStreamResponse"
            errs = spec.errors(name, chunk)
            assert not errs, f"{where}: stream event breaks {name}: {errs}\n{data[:600]!r}"
        return
    errs = spec.errors("CreateChatCompletionResponse", reply.json())
    assert not errs, (
        f"{where}: body breaks CreateChatCompletionResponse: {errs}\n{reply.body[:800]!r}"
    )


# -- generated from the spec -------------------------------------------------------------

models = st.sampled_from(sorted(MODELS))
spec_requests = from_schema(spec.inline("CreateChatCompletionRequest"))


@pytest.mark.slow
@FUZZ
@given(spec_requests, models)
def test_generated_requests_keep_the_contract(
    gw: ThreadedGateway, request: dict[str, Any], model: str
) -> None:
    # The model picks the backend; any string is valid for the spec's ``model``.
    request = {**request, "model": model}
    assert not spec.errors("CreateChatCompletionRequest", request)
    check(gw.post(json.dumps(request).encode()), request)


@pytest.mark.slow
@FUZZ
@given(spec_requests, models, st.booleans())
def test_generated_requests_stream_and_not(
    gw: ThreadedGateway, request: dict[str, Any], model: str, stream: bool
) -> None:
    """The same, with ``stream`` forced so every backend's stream translator is exercised."""
    request = {**request, "model": model, "stream": stream}
    if stream and not isinstance(request.get("stream_options"), dict | None):
        request.pop("stream_options")
    check(gw.post(json.dumps(request).encode()), request)


# -- mutations of valid requests ----------------------------------------------------------

BASE = [
    {"model": "c-mock", "messages": [{"role": "user", "content": "Hello there"}]},
    {
        "model": "c-anthropic",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        "max_tokens": 50,
        "stream": True,
    },
    {
        "model": "c-gemini",
        "messages": [{"role": "user", "content": "What's the weather?"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "auto",
    },
    {
        "model": "c-ollama",
        "messages": [
            {"role": "user", "content": "call it"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    {"model": "c-openai", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0.2},
]

ODD_STRINGS = [
    "\u0000",
    "\ud800",  # a lone surrogate (valid JSON escape, invalid UTF-16)
    "\U0001f600" * 50,
    "\u202egnp.exe",
    "e\u0301" * 100,
    "\ufeff",
    "x" * 300_000,
    "",
    "data: [DONE]\n\n",
    '{"error": 1}',
]
WRONG_TYPES: list[Any] = [None, True, 0, -1, 1.5, "", "x", [], [None], {}, {"a": 1}]
HUGE: list[Any] = [10**30, -(10**30), 1e308, -1e308, 2**63, 2**64, 10**400]


DEEP = "__deeply_nested__"


def deep_json(depth: int) -> bytes:
    """``depth`` levels of alternating objects and arrays (too deep for json.dumps to write)."""
    opens = "".join('{"k":' if i % 2 == 0 else "[" for i in range(depth))
    closes = "".join("}" if i % 2 == 0 else "]" for i in reversed(range(depth)))
    return (opens + '"leaf"' + closes).encode()


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


def set_at(obj: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    obj = json.loads(json.dumps(obj))
    node = obj
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return obj


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Any, bytes]:
    base: dict[str, Any] = draw(st.sampled_from(BASE))
    where = draw(st.sampled_from(paths(base)))
    kind = draw(st.sampled_from(["wrong_type", "delete", "huge", "odd_unicode", "deep", "extra"]))
    if kind == "delete":
        req = set_at(base, where, None, delete=True)
    elif kind == "wrong_type":
        req = set_at(base, where, draw(st.sampled_from(WRONG_TYPES)))
    elif kind == "huge":
        req = set_at(base, where, draw(st.sampled_from(HUGE)))
    elif kind == "odd_unicode":
        req = set_at(base, where, draw(st.sampled_from(ODD_STRINGS)))
    elif kind == "deep":
        req = set_at(base, where, DEEP)
        depth = draw(st.sampled_from([64, 1000, 100_000]))
        return req, json.dumps(req).encode().replace(f'"{DEEP}"'.encode(), deep_json(depth))
    else:
        req = {
            **base,
            draw(st.sampled_from(["n", "logprobs", "audio", "extra_field", "stop"])): draw(
                st.sampled_from(WRONG_TYPES + HUGE + ODD_STRINGS[:3])
            ),
        }
    # json.dumps cannot write 10**400 as a float; it writes the integer literal, which is the point.
    return req, json.dumps(req).encode()


@FUZZ
@given(mutated())
def test_mutated_requests_never_5xx(gw: ThreadedGateway, case: tuple[Any, bytes]) -> None:
    request, body = case
    check(gw.post(body), request)


RAW_BODIES = [
    # An integer beyond a double: the relay must re-encode the body to rename the model.
    b'{"model": "c-openai", "messages": [{"role": "user", "content": "hi"}], "n": 1'
    + b"0" * 400
    + b"}",
    b"",
    b"{",
    b"[]",
    b'"just a string"',
    b"null",
    b"\xff\xfe\x00garbage",
    b'{"model": "c-mock", "messages": [{"role": "user", "content": "\xff\xfe"}]}',  # invalid UTF-8
    b'{"model": "c-mock", "messages": [{"role": "user", "content": "hi"}]}'
    + b" " * 10
    + b"trailing",
    b'{"model": "c-mock", "model": 5, "messages": []}',
    b'{"model": "c-mock", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"model": "c-mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e999}',
    b'{"model": "c-mock", "messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    b'{"model": "c-openai", "messages": [{"role": "user", "content": "hi"}], "x": '
    + b"[" * 200_000
    + b"]" * 200_000
    + b"}",
]


@pytest.mark.parametrize("body", RAW_BODIES, ids=range(len(RAW_BODIES)))
def test_raw_bodies_never_5xx(gw: ThreadedGateway, body: bytes) -> None:
    reply = gw.post(body)
    check(reply)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("stream", [False, True])
def test_each_backend_answers_within_the_contract(
    gw: ThreadedGateway, model: str, stream: bool
) -> None:
    """The baseline the fuzzers rely on: a plain request succeeds on every backend."""
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": stream,
    }
    if stream:
        request["stream_options"] = {"include_usage": True}
    reply = gw.post(json.dumps(request).encode())
    assert reply.status == 200, reply.body[:500]
    check(reply, request)


def test_models_list_matches_the_spec(gw: ThreadedGateway) -> None:
    reply = gw.get("/v1/models")
    assert reply.status == 200
    assert not spec.errors("ListModelsResponse", reply.json())
    assert set(MODELS) <= {m["id"] for m in reply.json()["data"]}


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/models/x/y"])
def test_unknown_paths_are_spec_errors(gw: ThreadedGateway, path: str) -> None:
    reply = gw.get(path)
    assert reply.status == 404
    assert not spec.errors("ErrorResponse", reply.json())


def test_the_checks_can_fail() -> None:
    """A wrong body is caught by each schema (so a passing run means something)."""
    assert spec.errors("ErrorResponse", {"error": {"message": "x"}})
    assert spec.errors(
        "CreateChatCompletionResponse", {"id": "x", "object": "chat.completion", "choices": []}
    )
    assert spec.errors(
        "CreateChatCompletionStreamResponse",
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0}],
        },
    )
    with pytest.raises(AssertionError):
        check(
            Reply(
                500,
                {},
                b'{"error": {"message": "boom", "type": "api_error", "param": null, "code": null}}',
            )
        )
