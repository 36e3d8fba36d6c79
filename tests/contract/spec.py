"""OpenAI's published OpenAPI description, turned into JSON Schema validators and generators.

The spec mixes OpenAPI 3.0 (``nullable: true``) into a 3.1 document; jsonschema
ignores ``nullable``, so it is rewritten as a ``null`` alternative before use.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

# The schemas the gateway's answers must match, cut from OpenAI's spec (tests/fixtures/SOURCES.md);
# CHROMAGENT_OPENAPI can point at the whole published file instead.
SPEC = Path(
    os.environ.get(
        "CHROMAGENT_OPENAPI",
        Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "openai-openapi-chat.yaml",
    )
)
# Keys that only document; dropping them keeps generated schemas small.
_DOC_KEYS = frozenset(
    {"description", "example", "examples", "x-oaiMeta", "title", "deprecated", "discriminator"}
)


def _null_ok(node: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in node.items() if k != "nullable"}
    if not node.get("nullable"):
        return rest
    t = rest.get("type")
    if isinstance(t, str) and "enum" not in rest:
        return {**rest, "type": [t, "null"]}
    return {"anyOf": [rest, {"type": "null"}]}


def _fix(node: Any) -> Any:
    if isinstance(node, dict):
        return _null_ok({k: _fix(v) for k, v in node.items()})
    if isinstance(node, list):
        return [_fix(v) for v in node]
    return node


@functools.cache
def components() -> dict[str, Any]:
    with SPEC.open("rb") as fh:
        doc = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schemas: dict[str, Any] = _fix(doc["components"]["schemas"])
    return schemas


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<name>`` with every $ref resolvable."""
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": {"schemas": components()}}
    )


def errors(name: str, instance: Any) -> list[str]:
    """Human-readable violations of schema ``name`` (empty when valid)."""
    out = []
    for err in validator(name).iter_errors(instance):
        where = "/".join(str(p) for p in err.absolute_path) or "<root>"
        out.append(f"{where}: {err.message[:300]}")
    return out


def inline(name: str, *, drop: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Schema ``name`` with every $ref inlined (a recursive ref becomes ``{}``) and
    documentation keys removed, for hypothesis-jsonschema; ``drop`` removes properties."""
    schemas = components()

    def walk(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                ref = node["$ref"].rsplit("/", 1)[1]
                rest = {k: v for k, v in node.items() if k != "$ref" and k not in _DOC_KEYS}
                target = {} if ref in stack else walk(schemas[ref], (*stack, ref))
                return {"allOf": [target, walk(rest, stack)]} if rest else target
            out: dict[str, Any] = {}
            for k, v in node.items():
                if k in _DOC_KEYS:
                    continue
                if k == "properties" and isinstance(v, dict):
                    out[k] = {p: walk(s, stack) for p, s in v.items() if p not in drop}
                elif k == "required" and isinstance(v, list):
                    out[k] = [p for p in v if p not in drop]
                else:
                    out[k] = walk(v, stack)
            return out
        if isinstance(node, list):
            return [walk(v, stack) for v in node]
        return node

    result: dict[str, Any] = _premerge(walk(schemas[name], (name,)))
    return result


def _premerge(node: Any) -> Any:
    """Merge every ``allOf`` once, up front: hypothesis-jsonschema would otherwise re-merge
    (and re-canonicalise) them on every draw, which made generation ~1 s per example."""
    from hypothesis_jsonschema._canonicalise import merged

    if isinstance(node, list):
        return [_premerge(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _premerge(v) for k, v in node.items()}
    parts = node.get("allOf")
    if isinstance(parts, list):
        rest = {k: v for k, v in node.items() if k != "allOf"}
        combined = merged([*parts, rest] if rest else parts)
        if combined is not None:
            return combined
    return node
