"""The unsupported-parameter policy: one table, printed in the README, enforced the same
way for every backend (the end-to-end half is tests/e2e/test_policy_table.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chromagent_proxy.core import codec, policy
from chromagent_proxy.core.errors import UnsupportedFeature
from chromagent_proxy.dialects.chat.decode import present_fields, to_ir
from chromagent_proxy.schema.openai import ChatCompletionRequest

README = Path(__file__).resolve().parents[2] / "README.md"
_decode = codec.decoder(ChatCompletionRequest).decode


def test_readme_prints_the_table_from_the_code() -> None:
    text = README.read_text()
    start = text.index("<!-- policy-table -->\n") + len("<!-- policy-table -->\n")
    end = text.index("\n<!-- /policy-table -->")
    assert text[start:end] == policy.markdown()


def test_every_declared_request_field_has_a_row() -> None:
    fields = set(ChatCompletionRequest.__struct_fields__) - {"model"}
    assert fields <= set(policy.TABLE), fields - set(policy.TABLE)


VALUES = {
    "logprobs": True,
    "top_logprobs": 2,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "logit_bias": {"50256": -100},
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"},
    "web_search_options": {},
}


@pytest.mark.parametrize("backend", policy.BACKENDS)
@pytest.mark.parametrize("field", sorted(VALUES))
def test_refused_fields_are_a_400_naming_the_field(field: str, backend: str) -> None:
    body = codec.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: VALUES[field]}
    )
    req = _decode(body)
    assert field in present_fields(req)
    action = policy.TABLE[field][policy.BACKENDS.index(backend)]
    if action == "refuse":
        with pytest.raises(UnsupportedFeature) as exc:
            to_ir(req, backend)
        assert exc.value.param == field and exc.value.status == 400
    else:
        to_ir(req, backend)


def test_other_modalities_are_refused_text_is_fine() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    to_ir(_decode(codec.dumps({"model": "m", "messages": msgs, "modalities": ["text"]})), "gemini")
    with pytest.raises(UnsupportedFeature) as exc:
        body = {"model": "m", "messages": msgs, "modalities": ["text", "audio"]}
        to_ir(_decode(codec.dumps(body)), "anthropic")
    assert exc.value.param == "modalities"


def test_legacy_functions_become_tools() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "function_call": {"name": "w", "arguments": '{"c":"x"}'}},
            {"role": "function", "name": "w", "content": "sunny"},
        ],
        "functions": [{"name": "w", "parameters": {"type": "object"}}],
        "function_call": {"name": "w"},
    }
    req = to_ir(_decode(codec.dumps(body)), "anthropic")
    assert req.tools is not None and [t.name for t in req.tools] == ["w"]
    assert req.tool_choice is not None and req.tool_choice.mode == "tool"
    call = req.messages[1].parts[0]
    result = req.messages[2].parts[0]
    assert getattr(call, "id", None) == getattr(result, "call_id", None)
