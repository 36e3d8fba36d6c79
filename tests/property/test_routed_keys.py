"""Every client dialect refuses a body whose top level repeats ``model`` or ``stream``
(dialects/routed.py), checked against Python's own parser.

Bodies are serialized by hand so the keys come in every spelling a client may send
(``\\u`` escapes in the key, any whitespace), also nested in other objects and quoted
inside strings, where repeating them is fine. The reference: ``json.loads`` with an
``object_pairs_hook`` that sees every top-level pair. A body the typed decode accepts
must decode to the plain types the rest of the gateway expects.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chromagent_proxy.core.errors import InvalidRequest
from chromagent_proxy.dialects.chat.dialect import parse_request
from chromagent_proxy.dialects.embeddings.dialect import EmbeddingsDialect
from chromagent_proxy.dialects.messages.decode import parse_body
from chromagent_proxy.dialects.responses.request import decode_request

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPELLINGS = {
    "model": ['"model"', '"mod\\u0065l"', '"\\u006dodel"'],
    "stream": ['"stream"', '"str\\u0065am"'],
}
FILLER = ['\\"model\\"', '\\"stream\\"', 'say \\"model\\": 1', "stream", "", "\\u006dodel"]


def _string(s: str) -> str:
    return '"' + s + '"'


def _value_for(key: str, draw: st.DrawFn, stream_values: list[str]) -> str:
    if key == "model":
        return _string(draw(st.sampled_from(["a", "b", "m\\u006fdel"])))
    return draw(st.sampled_from(stream_values))


@st.composite
def bodies(draw: st.DrawFn, required: str, stream_values: list[str]) -> tuple[str, str | None]:
    """(a body, the routed key it repeats at its top level or None)."""
    members = [f'"{required}": ' + draw(st.sampled_from(_REQUIRED[required]))]
    n_model = draw(st.integers(1, 2))
    n_stream = draw(st.integers(0, 2)) if stream_values else 0
    for key, n in (("model", n_model), ("stream", n_stream)):
        for _ in range(n):
            name = draw(st.sampled_from(SPELLINGS[key]))
            members.append(
                f"{name}{draw(st.sampled_from([':', ' : ', ':  ']))}"
                + _value_for(key, draw, stream_values)
            )
    # Nested copies and the names inside strings: never a repeat.
    for _ in range(draw(st.integers(0, 2))):
        inner = draw(st.sampled_from(SPELLINGS["model"] + SPELLINGS["stream"]))
        members.append(f'"metadata": {{{inner}: {_string(draw(st.sampled_from(FILLER)))}}}')
    order = draw(st.permutations(members))
    body = "{" + draw(st.sampled_from([",", ", ", " ,\n"])).join(order) + "}"
    pairs: list[str] = []

    def top(obj: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs[:] = [k for k, _ in obj]
        return dict(obj)

    json.loads(body, object_pairs_hook=top)  # the last object closed is the top level
    repeated = [k for k in ("model", "stream") if pairs.count(k) > 1]
    return body, (repeated[0] if repeated else None)


_REQUIRED = {
    "messages": ['[{"role": "user", "content": "say \\"model\\": 1, \\"stream\\": true"}]'],
    "input": ['"stream of \\"model\\" text"', '[{"role": "user", "content": "model"}]'],
}


def _check(parse: Any, body: str, repeated: str | None) -> None:
    raw = body.encode()
    if repeated is None:
        req = parse(raw)
        assert type(req.model) is str
        stream = getattr(req, "stream", None)
        assert stream is None or type(stream) is bool
        msgspec.json.encode(req)  # the encoders take it as it is
        return
    with pytest.raises(InvalidRequest) as err:
        parse(raw)
    # Two repeated keys: either may be named first; the named one must be repeated.
    assert err.value.param in ("model", "stream")
    assert "more than once" in err.value.message
    assert err.value.status == 400


@SETTINGS
@given(bodies("messages", ["true", "false", "null"]))
def test_chat(case: tuple[str, str | None]) -> None:
    _check(parse_request, *case)


@SETTINGS
@given(bodies("messages", ["true", "false", "null"]))
def test_messages(case: tuple[str, str | None]) -> None:
    _check(parse_body, *case)


@SETTINGS
@given(bodies("input", ["true", "false"]))
def test_responses(case: tuple[str, str | None]) -> None:
    _check(decode_request, *case)


@SETTINGS
@given(bodies("input", []))
def test_embeddings(case: tuple[str, str | None]) -> None:
    dialect = EmbeddingsDialect()
    _check(lambda raw: dialect.parse(raw, {}, {}).native, *case)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model": 5, "messages": []}', "Expected `str`, got `int` - at `$.model`"),
        (b'{"model": "a", "stream": "yes", "messages": []}', "Expected `bool | null`, got `str`"),
        (b'{"model": "a", "messages": [], "stream": [1]}', "Expected `bool | null`, got `array`"),
        # stream_options is watched (its presence matters to the relay): same messages.
        (
            b'{"model": "a", "messages": [], "stream_options": {"include_usage": 5}}',
            "Expected `bool`, got `int` - at `$.stream_options.include_usage`",
        ),
        (
            b'{"model": "a", "messages": [], "stream_options": 3}',
            "Expected `object | null`, got `int` - at `$.stream_options`",
        ),
    ],
)
def test_wrong_types_are_named_as_before(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_request(body)
    assert message in err.value.message
    assert err.value.param in ("model", "stream", "stream_options", "stream_options.include_usage")


def test_a_large_prompt_is_checked_alike() -> None:
    prose = "lorem ipsum " * 30_000
    one = json.dumps({"model": "a", "messages": [{"role": "user", "content": prose}]})
    assert parse_request(one.encode()).model == "a"
    two = one[:-1] + ', "mod\\u0065l": "b"}'
    with pytest.raises(InvalidRequest) as err:
        parse_request(two.encode())
    assert err.value.param == "model"
