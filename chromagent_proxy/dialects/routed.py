"""A client request's typed decode that also refuses a repeated ``model`` or ``stream`` key.

Routing reads the last copy of a repeated key (msgspec keeps the last) while a relay
sends the raw body, whose upstream may read the first: ``{"model": "cheap", …,
"model": "dear"}`` would be routed and authorised as one model and served as another.
So a body that holds either key twice at its top level, in any spelling
(``"mod\\u0065l"``), is refused.

The check rides on the one typed decode the request needs anyway: in a decode-only
subclass of the request struct, ``model`` and ``stream`` have marker types, so msgspec
calls ``dec_hook`` for every copy of either key it meets at the top level (nested
objects and string contents never reach it). A separate walk of the top level cost a
second C-level pass over the whole body: ≈ 0.4 ms per MB, a sixth of a large
request's CPU (bench/README.md, issue 20).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar, cast

import msgspec

from chromagent_proxy.core.errors import InvalidRequest

T = TypeVar("T", bound=msgspec.Struct)


class _Model(str):
    """A ``model`` value as the hook saw it (turned back into ``str`` after the decode)."""

    __slots__ = ()


class _Stream:
    """A ``stream`` value as the hook saw it; ``null`` included, so a ``null`` copy counts."""

    __slots__ = ("value",)

    def __init__(self, value: bool | None) -> None:
        self.value = value


class _StreamOrNull(_Stream):
    __slots__ = ()


# The keys met during the decode running on this thread (msgspec runs the hook inside
# ``decode``, on the calling thread; an embedding application may decode on several).
_seen = threading.local()

_JSON_NAMES = {bool: "bool", int: "int", float: "float", str: "str", list: "array"}


def _json_name(obj: object) -> str:
    if obj is None:
        return "null"
    return _JSON_NAMES.get(type(obj), "object")


class _Present:
    """A watched field's value (``null`` included) as the hook saw it: the field was sent.
    Subclassed per field with the name and the field's own type (``RoutedDecoder``)."""

    __slots__ = ("value",)
    name: ClassVar[str]
    type: ClassVar[Any]

    def __init__(self, value: Any) -> None:
        self.value = value


def _hook(tp: type, obj: Any) -> Any:
    # The messages match msgspec's own for these fields (clients and tests read them).
    if isinstance(tp, type) and issubclass(tp, _Present):
        try:
            value = msgspec.convert(obj, tp.type)
        except msgspec.ValidationError as exc:
            # convert names paths from the value ("$.include_usage"): name them from the body.
            text = str(exc)
            at = f"`$.{tp.name}"
            raise msgspec.ValidationError(
                text.replace("`$", at, 1) if " - at `$" in text else f"{text} - at {at}`"
            ) from None
        _seen.keys.append(tp.name)
        return tp(value)
    if tp is _Model:
        if type(obj) is not str:
            raise TypeError(f"Expected `str`, got `{_json_name(obj)}`")
        _seen.keys.append("model")
        return _Model(obj)
    if type(obj) is not bool and not (obj is None and tp is _StreamOrNull):
        expected = "bool | null" if tp is _StreamOrNull else "bool"
        raise TypeError(f"Expected `{expected}`, got `{_json_name(obj)}`")
    _seen.keys.append("stream")
    return _Stream(obj) if tp is _Stream else _StreamOrNull(obj)


class RoutedDecoder(Generic[T]):
    """``decode(body)`` → a ``tp`` (its decode-only subclass) with plain ``model`` and
    ``stream`` values; raises msgspec's errors as the plain decoder would, and
    ``InvalidRequest`` for a repeated routed key. ``watch``: optional fields whose
    presence the caller needs even when sent as ``null`` (``decode_seen``)."""

    def __init__(self, tp: type[T], watch: tuple[str, ...] = ()) -> None:
        fields = {f.name: f for f in msgspec.structs.fields(tp)}
        marked: list[tuple[str, type, Any]] = [("model", _Model, fields["model"].default)]
        stream = fields.get("stream")
        if stream is not None:
            kind = _StreamOrNull if stream.default is None else _Stream
            marked.append(("stream", kind, stream.default))
        for name in watch:
            f = fields[name]
            present = type(f"_Present_{name}", (_Present,), {"name": name, "type": f.type})
            marked.append((name, present, f.default))
        self._watch = watch
        spec = [(n, k) if d is msgspec.NODEFAULT else (n, k, d) for n, k, d in marked]
        sub = msgspec.defstruct(f"_Routed{tp.__name__}", spec, bases=(tp,), module=__name__)
        # The subclass's instances are ``tp``s: callers see the type they asked for.
        self._decode = cast(Callable[[bytes], T], msgspec.json.Decoder(sub, dec_hook=_hook).decode)
        self._stream = stream is not None

    def __call__(self, body: bytes) -> T:
        return self.decode_seen(body)[0]

    def decode_seen(self, body: bytes) -> tuple[T, list[str]]:
        """The request, and the routed and watched keys the body holds (in body order)."""
        keys: list[str] = []
        _seen.keys = keys
        try:
            req = self._decode(body)
        finally:
            _seen.keys = None
        for dup in ("model", "stream"):
            if keys.count(dup) > 1:
                raise InvalidRequest(
                    f"'{dup}' appears more than once in the request body; send it once",
                    param=dup,
                )
        # Back to the plain types: every later reader (encoders included) expects them.
        req.model = str(req.model)  # type: ignore[attr-defined]
        if self._stream:
            stream = req.stream  # type: ignore[attr-defined]
            if isinstance(stream, _Stream):
                req.stream = stream.value  # type: ignore[attr-defined]
        for name in self._watch:
            value = getattr(req, name)
            if isinstance(value, _Present):
                setattr(req, name, value.value)
        return req, keys
