"""The model rename on raw bytes (rawjson.rename_model) against a real JSON parser.

Bodies are serialized by hand so every spelling a client may send appears: any
whitespace, ``\\u`` escapes (also inside the ``model`` key itself), the key nested in
other objects or quoted inside strings, duplicate top-level keys. Whenever the fast
path answers, the result must parse to the same document with only the top-level model
changed; when it cannot be sure it must say so (None), and the gateway re-encodes.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chromagent_proxy.core import rawjson
from chromagent_proxy.core.body import JOIN_BELOW, Body, Pieces, insert_after_brace, joined
from chromagent_proxy.core.rawjson import rename_model, rename_model_parts

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRICKY = [
    "model",
    '"model"',
    '"model": "gpt-4o"',
    '{"model":"x"}',
    'say "model',
    "\\",
    '\\"',
    "mod\\el",
    "Zoë → ☃",
    "line\nbreak\ttab",
    "\u006dodel",
    "",
]
text = st.sampled_from(TRICKY) | st.text(max_size=12)
keys = st.sampled_from(["model", "messages", "content", "role", 'a"b', "x\\", '"model']) | st.text(
    max_size=6
)
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | text
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(st.tuples(keys, inner), max_size=3).map(lambda p: ("obj", p))
    ),
    max_leaves=12,
)
Pairs = list[tuple[str, Any]]


@st.composite
def styles(draw: st.DrawFn) -> dict[str, Any]:
    ws = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])
    return {
        "ascii": draw(st.booleans()),
        "ws": [draw(ws) for _ in range(4)],
        "escape_key": draw(st.sampled_from([False, False, False, True])),
    }


def enc_str(s: str, style: dict[str, Any], *, key: bool = False) -> str:
    if key and s == "model" and style["escape_key"]:
        return '"mod\\u0065l"'
    return json.dumps(s, ensure_ascii=style["ascii"])


def ser(v: Any, style: dict[str, Any]) -> str:
    a, b, c, d = style["ws"]
    if isinstance(v, tuple) and v and v[0] == "obj":
        items = [f"{a}{enc_str(k, style, key=True)}{b}:{c}{ser(x, style)}{d}" for k, x in v[1]]
        return "{" + ",".join(items) + "}" if items else "{" + a + "}"
    if isinstance(v, list):
        return "[" + ",".join(f"{a}{ser(x, style)}{d}" for x in v) + "]"
    if isinstance(v, str):
        return enc_str(v, style)
    return json.dumps(v)


def plain(v: Any) -> Any:
    """The strategy's value as a parser returns it with pairs kept (object_pairs_hook=list)."""
    if isinstance(v, tuple) and v and v[0] == "obj":
        return [(k, plain(x)) for k, x in v[1]]
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def parse(raw: bytes) -> Any:
    return json.loads(raw, object_pairs_hook=list)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, Pairs, str]:
    """(raw body, its top-level pairs, the model a decoder routes by: the last one)."""
    pairs: Pairs = draw(
        st.lists(st.tuples(keys.filter(lambda k: k != "model"), values), max_size=4)
    )
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 2]))):  # sometimes a duplicate key
        pairs.insert(draw(st.integers(0, len(pairs))), ("model", draw(text)))
    style = draw(styles())
    raw = ser(("obj", pairs), style).encode()
    model = [v for k, v in pairs if k == "model"][-1]
    return raw, pairs, model


@SETTINGS
@given(bodies(), text)
def test_rename_is_exact_or_declines(body: tuple[bytes, Pairs, str], new: str) -> None:
    raw, pairs, model = body
    assert parse(raw) == plain(("obj", pairs))  # the hand serializer writes valid JSON
    out = rename_model(raw, model, new)
    if out is None:
        return
    assert sum(1 for k, _ in pairs if k == "model") == 1
    expected = [(k, new if k == "model" else plain(v)) for k, v in pairs]
    assert parse(out) == expected
    # Only the value's bytes changed: everything before and after is the client's.
    prefix = raw[: raw.index(b'"model"')]
    assert out.startswith(prefix)


def _unique_rename(raw: bytes, pairs: Pairs, model: str, new: str) -> bytes | None:
    """The ``unique=True`` rename of a body with one top-level model key: the same bytes as
    the full check whenever that one renames, and exact whenever it renames at all."""
    out = rename_model(raw, model, new, unique=True)
    checked = rename_model(raw, model, new)
    if checked is not None:
        assert out == checked
    if out is not None:
        assert parse(out) == [(k, new if k == "model" else plain(v)) for k, v in pairs]
    _check_parts(raw, model, new, out)
    return out


def _check_parts(raw: bytes, model: str, new: str, out: bytes | None) -> Body | None:
    """``rename_model_parts`` joined is ``rename_model``'s body, and when it answers in
    pieces nothing of the client's body was copied: views of ``raw`` itself before and
    after the new value, which is the JSON string of ``new``. A small body is joined."""
    parts = rename_model_parts(raw, model, new, unique=True)
    assert (parts is None) == (out is None)
    if parts is None:
        return None
    assert joined(parts) == out and len(parts) == len(out or b"")
    if len(raw) < JOIN_BELOW:
        assert isinstance(parts, bytes)
    if isinstance(parts, Pieces):
        before, value, after = parts.parts
        assert isinstance(before, memoryview) and before.obj is raw
        assert isinstance(after, memoryview) and after.obj is raw
        assert bytes(before) == raw[: len(before)] and raw.endswith(after)
        assert orjson.loads(value) == new
    return parts


@SETTINGS
@given(bodies(), text)
def test_unique_rename_is_exact_or_declines_on_single_key_bodies(
    body: tuple[bytes, Pairs, str], new: str
) -> None:
    """``unique=True`` (the request path has refused repeated model keys): on bodies with
    one top-level model key it is exact, and takes the fast path whenever the full check
    does."""
    raw, pairs, model = body
    assume(sum(1 for k, _ in pairs if k == "model") == 1)
    out = _unique_rename(raw, pairs, model, new)
    if out is not None:
        assert out.startswith(raw[: raw.index(b'"model"')])


@SETTINGS
@given(
    st.lists(st.tuples(st.sampled_from(["messages", "temperature", "user"]), scalars), max_size=3),
    text,
    text,
    st.booleans(),
)
def test_unique_literal_key_takes_the_fast_path(
    extra: Pairs, model: str, new: str, first: bool
) -> None:
    """A body like the SDKs send (model first or after the messages) is never re-encoded."""
    assume(model != new)  # no rename then: the gateway relays the body as it is
    pairs = dict(extra)
    body = {"model": model, **pairs} if first else {**pairs, "model": model}
    for raw in (
        orjson.dumps(body),
        json.dumps(body).encode(),
        json.dumps(body, indent=2, ensure_ascii=False).encode(),
    ):
        if raw.count(b'"model"') != 1 or b"\\u006" in raw or "\\" in model or '"' in model:
            continue  # the cases it declines by design are covered above
        out = rename_model(raw, model, new)
        assert out is not None
        assert json.loads(out) == {**body, "model": new}


def test_declines_when_unsure() -> None:
    # The first "model" near the start is nested here; the last one is not a string.
    nested = b'{"tools":[{"model":"a"}],"model":1,"m":{"model":"a"}}'
    assert rename_model(nested, "a", "b") is None
    assert rename_model(b'{"model":"a","model":"a"}', "a", "b") is None
    assert rename_model(b'{"mod\\u0065l":"a","model":"a"}', "a", "b") is None
    assert rename_model(b'{"model":"a"}', "other", "b") is None  # not the routed model
    assert rename_model(b'{"x":{"model":"a"},"model":"a"}', "a", "b") is not None
    assert rename_model(b'{"model":"a","x":{"model":"a"}}', "a", "b") is not None
    assert rename_model(b'{"x":"\\"model\\":\\"a\\"","model":"a"}', "a", "b") is not None
    assert rename_model(b'{"model":"a\\"b"}', 'a"b', "c") is None  # escaped quote inside


def test_keeps_every_other_byte() -> None:
    raw = b'{ "messages" : [ {"role":"user","content":"say \\"model\\": x\\n"} ] ,\n "model"\t:  "alias" , "n": 1.50 }'
    assert rename_model(raw, "alias", 'gpt-"4o"') == raw.replace(b'"alias"', b'"gpt-\\"4o\\""')


PAD = rawjson._PART + 10  # a member longer than the unique depth check copies


@SETTINGS
@given(bodies(), text, st.booleans(), st.booleans())
def test_unique_rename_around_long_members(
    body: tuple[bytes, Pairs, str], new: str, pad_first: bool, pad_last: bool
) -> None:
    """Long members before and/or after the model (a prompt, tools): the depth check copies
    the shorter side, or parses the renamed body when both are long; exact either way."""
    raw, pairs, model = body
    assume(sum(1 for k, _ in pairs if k == "model") == 1)
    pad = "x" * PAD
    if pad_first:
        raw = b'{"pad0":"' + pad.encode() + b'",' + raw[1:]
        pairs = [("pad0", pad), *pairs]
    if pad_last:
        raw = raw[:-1] + b',"pad1":"' + pad.encode() + b'"}'
        pairs = [*pairs, ("pad1", pad)]
    assert parse(raw) == plain(("obj", pairs))
    out = _unique_rename(raw, pairs, model, new)
    if out is not None and pad_first != pad_last:
        # One side of the key is short enough for the depth check (≤ _PART): settled
        # without the renamed body, so this large body goes as pieces, uncopied.
        assert isinstance(rename_model_parts(raw, model, new, unique=True), Pieces)


def test_unique_depth_check_cases() -> None:
    """Each way the unique path places a literal "model" key (rawjson._top_level)."""
    big = "y" * PAD

    def ren(doc: str) -> bytes | None:
        return rename_model(doc.encode(), "a", "b", unique=True)

    # First member of the body: no parse at all, whatever follows.
    assert ren(' \n{ "model" : "a", "x": {"model": "a"}}') == (
        b' \n{ "model" : "b", "x": {"model": "a"}}'
    )
    # Last member, the body's closing brace after it.
    assert (
        ren('{"x": {"model": "a"}, "model": "a" }\n') == b'{"x": {"model": "a"}, "model": "b" }\n'
    )
    # A nested object's first or last member is not the top-level key.
    assert ren('{"x": {"model": "a"}}') is None
    assert ren('{"x": [{"y": 1, "model": "a"}]}') is None
    assert ren('{"x": {"model": "a", "y": 1}, "z": 2}') is None
    # Members on both sides: the shorter side parses.
    assert ren('{"n": 1, "model": "a", "m": 2}') == b'{"n": 1, "model": "b", "m": 2}'
    assert ren(f'{{"p": "{big}", "model": "a", "m": 2}}') == (
        f'{{"p": "{big}", "model": "b", "m": 2}}'.encode()
    )
    assert ren(f'{{"n": 1, "model": "a", "p": "{big}"}}') == (
        f'{{"n": 1, "model": "b", "p": "{big}"}}'.encode()
    )
    # Both sides long: the renamed body is parsed (the full check).
    assert ren(f'{{"p": "{big}", "model": "a", "q": "{big}"}}') == (
        f'{{"p": "{big}", "model": "b", "q": "{big}"}}'.encode()
    )
    assert ren(f'{{"p": "{big}", "x": {{"n": 1, "model": "a", "m": 2}}, "q": "{big}"}}') is None
    # The key "\"model" (a quote, then model): its "model" is text, not a key.
    assert ren('{"\\"model": "a"}') is None
    assert ren('{"\\"model": "a", "model": "a"}') == b'{"\\"model": "a", "model": "b"}'
    # Text in a string value that looks like the member.
    assert ren('{"s": "\\"model\\": \\"a\\"}", "model": "a"}') == (
        b'{"s": "\\"model\\": \\"a\\"}", "model": "b"}'
    )


@SETTINGS
@given(
    bodies(), st.lists(st.integers(0, 10_000), max_size=4), st.sampled_from(["", " ", "\n" * 70])
)
def test_insert_after_brace_on_any_cut_of_the_body(
    body: tuple[bytes, Pairs, str], cuts: list[int], lead: str
) -> None:
    """The usage option goes right after the body's opening brace however the body is cut
    into pieces (bytes or views, the brace in any piece, past long leading whitespace)."""
    raw = lead.encode() + body[0]
    at = sorted({min(c, len(raw)) for c in cuts})
    bounds = [0, *at, len(raw)]
    pieces = tuple(
        memoryview(raw)[a:b] if i % 2 else raw[a:b]
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    )
    opt = b'"stream_options":{"include_usage":true},'
    brace = raw.index(b"{") + 1
    expected = raw[:brace] + opt + raw[brace:]
    assert joined(insert_after_brace(Pieces(pieces), opt)) == expected
    assert joined(insert_after_brace(raw, opt)) == expected
    assert json.loads(expected[:brace] + expected[brace + len(opt) :]) is not None
