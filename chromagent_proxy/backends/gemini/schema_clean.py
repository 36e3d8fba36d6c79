"""JSON Schema (what OpenAI clients send) → Gemini's OpenAPI-3.0 ``Schema`` subset.

Gemini fails the whole request on a keyword it does not know
(``additionalProperties``, ``$schema``, ``const``, ``exclusiveMinimum``,
``type: [..]``...; wire-formats.md §4.2). This rewrites a schema into what it
accepts and keeps the meaning where the subset can say it: ``$ref`` inlined,
``const`` → ``enum``, nullable unions → ``nullable``, ``oneOf`` → ``anyOf``,
``allOf`` merged. Constraints it cannot express are moved into the
``description`` as words, so the model still sees them.

Inlining ``$ref`` can grow a small schema exponentially (a chain of
definitions each using the next twice doubles per level), so cleaning draws on
a ``Budget`` shared by the whole request: every node produced (and every
reference followed) costs one unit, long text costs more, and running out
raises ``SchemaTooLarge`` for the translator to turn into a 400 naming the
schema. The budget also bounds the time one request holds the event loop.
"""

from __future__ import annotations

from typing import Any

from ... import codec

_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
# Formats Gemini accepts per type; any other format is described instead.
_FORMATS = frozenset({"date-time", "enum", "int32", "int64", "float", "double"})
# Keywords copied as they are (after recursion where they hold schemas).
_COPY = (
    "title",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "propertyOrdering",
)
# Worth telling the model about when dropped (keyword → how to say it).
_DESCRIBE = {
    "exclusiveMinimum": "greater than {}",
    "exclusiveMaximum": "less than {}",
    "multipleOf": "a multiple of {}",
    "uniqueItems": "items must be unique",
    "default": "default: {}",
    "format": "format: {}",
    "examples": "examples: {}",
    "example": "example: {}",
}
_MAX_DEPTH = 32
_MAX_HOPS = 64  # $ref hops on one path that expanded_size follows
# Output nodes one request's schemas (all tools and response_format) may expand to.
# Generous for real tool sets (Claude Code's ~20 tools use a few hundred) and a few ms
# of CPU at worst; Gemini itself refuses far smaller schemas as "too many states".
MAX_NODES = 4000
# Characters of text (descriptions, enum values) that cost one node.
_CHARS_PER_NODE = 256


class SchemaTooLarge(Exception):
    """The schema expands past the request's budget (``Budget.limit`` nodes)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} nodes once $ref is inlined")
        self.limit = limit


class Budget:
    """What one request's schemas may still expand to; shared by all its schemas."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int = MAX_NODES) -> None:
        self.limit = limit
        self.left = limit

    def take(self, cost: int = 1) -> None:
        self.left -= cost
        if self.left < 0:
            raise SchemaTooLarge(self.limit)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else codec.dumps(value).decode()


class _Cleaner:
    def __init__(self, root: dict[str, Any], budget: Budget) -> None:
        self.budget = budget
        # $refs being inlined on the current path: meeting one again is recursion.
        self.active: set[str] = set()
        self.defs: dict[str, Any] = {}
        for key in ("$defs", "definitions"):
            defs = root.get(key)
            if isinstance(defs, dict):
                for name, sub in defs.items():
                    self.defs[f"#/{key}/{name}"] = sub

    def resolve(self, schema: dict[str, Any], added: list[str]) -> dict[str, Any]:
        """``schema`` with its ``$ref`` chain followed; each followed ref goes into
        ``self.active`` (and ``added``, for the caller to take out when done with it)."""
        ref = schema.get("$ref")
        while isinstance(ref, str):
            target = self.defs.get(ref)
            if target is None or ref in self.active or not isinstance(target, dict):
                # Unknown or recursive reference: an object the model fills freely.
                return {"type": "object", "description": schema.get("description", "")}
            self.budget.take()
            self.active.add(ref)
            added.append(ref)
            # Sibling keywords next to $ref (e.g. description) win over the target's.
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            schema, ref = merged, target.get("$ref")
        return schema

    def expanded_size(self, schema: Any, limit: int) -> int:
        """About how many nodes ``schema`` becomes with every ``$ref`` inlined (at most
        ``limit + 1``), in time linear in the schema: each definition is sized once, so an
        exponential ``$ref`` DAG is refused before any of it is expanded."""
        memo: dict[str, int] = {}

        def size(node: Any, depth: int, refs: tuple[str, ...]) -> int:
            if not isinstance(node, dict) or depth > _MAX_DEPTH:
                return 0
            n = 1
            ref = node.get("$ref")
            # A hop is not nesting (as in clean); the path's hops are bounded instead, so
            # a long chain cannot recurse deeply (the budget still counts every hop).
            if isinstance(ref, str) and ref not in refs and len(refs) < _MAX_HOPS:
                if ref not in memo:
                    memo[ref] = size(self.defs.get(ref), depth, (*refs, ref))
                n += memo[ref]
            subs: list[Any] = []
            props = node.get("properties")
            if isinstance(props, dict):
                subs += props.values()
            items = node.get("items")
            subs += items if isinstance(items, list) else [items]
            for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
                more = node.get(key)
                if isinstance(more, list):
                    subs += more
            for sub in subs:
                n += size(sub, depth + 1, refs)
                if n > limit:
                    break
            return min(n, limit + 1)

        return size(schema, 0, ())

    def clean(self, schema: Any, depth: int = 0) -> dict[str, Any]:
        if not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return {}
        self.budget.take()
        added: list[str] = []
        out = self._clean(self.resolve(schema, added), added, depth)
        self.active.difference_update(added)  # refs in use on this path only
        return out

    def _clean(self, schema: dict[str, Any], added: list[str], depth: int) -> dict[str, Any]:
        notes: list[str] = []
        out: dict[str, Any] = {}

        # allOf: merge the parts into one schema (properties and required united).
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in all_of:
                sub = self.resolve(sub, added) if isinstance(sub, dict) else {}
                for k, v in sub.items():
                    if k == "properties" and isinstance(v, dict):
                        merged["properties"] = {**merged.get("properties", {}), **v}
                    elif k == "required" and isinstance(v, list):
                        merged["required"] = [*merged.get("required", []), *v]
                    else:
                        merged.setdefault(k, v)
            schema = merged

        nullable = schema.get("nullable") is True
        types = schema.get("type")
        type_list = types if isinstance(types, list) else [types] if isinstance(types, str) else []
        if "null" in type_list:
            nullable = True
            type_list = [t for t in type_list if t != "null"]

        variants = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(variants, list):
            kept = []
            for v in variants:
                if isinstance(v, dict) and v.get("type") == "null" and len(v) == 1:
                    nullable = True
                else:
                    kept.append(v)
            if len(kept) == 1:
                # anyOf [X, null] is just a nullable X.
                inner = self.clean(kept[0], depth + 1)
                for k, v in inner.items():
                    if k == "description" and "description" in schema:
                        continue
                    out[k] = v
            elif kept:
                out["anyOf"] = [self.clean(v, depth + 1) for v in kept]

        if len(type_list) == 1 and type_list[0] in _TYPES:
            out["type"] = type_list[0].upper()
        elif len(type_list) > 1:
            out["anyOf"] = [{"type": t.upper()} for t in type_list if t in _TYPES]
            out.pop("type", None)

        if "const" in schema:
            const = schema["const"]
            if isinstance(const, str):
                out["enum"] = [const]
                out.setdefault("type", "STRING")
            else:
                notes.append(f"must be {_text(const)}")
        enum = schema.get("enum")
        if isinstance(enum, list):
            values = [e for e in enum if e is not None]
            if None in enum:
                nullable = True
            self.budget.take(len(values) // 16)
            if values and all(isinstance(e, str) for e in values):
                out["enum"] = values
                out["type"] = "STRING"
            elif values:
                # Gemini enums are strings only; keep the type, say the values.
                notes.append("one of " + ", ".join(_text(e) for e in values))

        props = schema.get("properties")
        if isinstance(props, dict):
            out["properties"] = {name: self.clean(sub, depth + 1) for name, sub in props.items()}
            out.setdefault("type", "OBJECT")
            required = schema.get("required")
            if isinstance(required, list):
                req = [r for r in required if isinstance(r, str) and r in props]
                if req:
                    out["required"] = req
        items = schema.get("items")
        if isinstance(items, dict):
            out["items"] = self.clean(items, depth + 1)
        elif isinstance(items, list) and items:
            out["items"] = {"anyOf": [self.clean(i, depth + 1) for i in items]}
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix and "items" not in out:
            out["items"] = {"anyOf": [self.clean(i, depth + 1) for i in prefix]}

        for key in _COPY:
            if key in schema:
                out[key] = schema[key]
        fmt = schema.get("format")
        if isinstance(fmt, str):
            if fmt in _FORMATS:
                out["format"] = fmt
            else:
                notes.append(_DESCRIBE["format"].format(fmt))
        for key, phrase in _DESCRIBE.items():
            if key == "format" or key not in schema:
                continue
            value = schema[key]
            if key == "uniqueItems":
                if value is True:
                    notes.append(phrase)
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(value, bool):
                continue  # draft-4 boolean form: no number to state
            else:
                notes.append(phrase.format(_text(value)))
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict) and "properties" not in out:
            # A map: Gemini has no way to say "any keys"; describe the value type.
            value_type = additional.get("type")
            notes.append(f"an object with any keys; values: {_text(value_type or 'any')}")
            out.setdefault("type", "OBJECT")

        description = schema.get("description")
        if isinstance(description, str) and description:
            out["description"] = description
        if notes:
            extra = "; ".join(notes)
            out["description"] = (
                f"{out['description']} ({extra})" if "description" in out else extra
            )
        if "description" in out:
            self.budget.take(len(out["description"]) // _CHARS_PER_NODE)
        if nullable:
            out["nullable"] = True
        return out


def to_gemini_schema(schema: dict[str, Any], budget: Budget | None = None) -> dict[str, Any]:
    """A cleaned copy of ``schema`` (the input is never modified).

    Raises ``SchemaTooLarge`` when it would expand past ``budget`` (one per request).
    """
    budget = budget or Budget()
    cleaner = _Cleaner(schema, budget)
    if cleaner.expanded_size(schema, budget.left) > budget.left:
        raise SchemaTooLarge(budget.limit)
    return cleaner.clean(schema)


def is_empty_object(schema: dict[str, Any] | None) -> bool:
    """True for ``None``/``{}``/``{"type": "object"}`` with no properties: a function without args."""
    if not schema:
        return True
    return (
        schema.get("type") in ("object", None)
        and not schema.get("properties")
        and not any(k in schema for k in ("anyOf", "oneOf", "allOf", "$ref", "items"))
    )
