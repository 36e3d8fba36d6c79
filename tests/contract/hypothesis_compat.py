"""Make hypothesis-jsonschema 0.23 work with current Hypothesis.

hypothesis-jsonschema (latest release 0.23.1) drives Hypothesis' private
``many`` helper through its old ``while elements.more()`` interface; Hypothesis
6.150+ replaced that with ``with many(...) as elements: for _ in elements``.
This adapter gives the library the old interface on top of the new one. It is
only used by the contract tests; drop it once hypothesis-jsonschema catches up.
"""

from __future__ import annotations

import types
from typing import Any

import hypothesis_jsonschema._from_schema as _fs
from hypothesis.internal.conjecture import utils as cu


class _OldStyleMany:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._many = cu.many(*args, **kwargs)
        self._many.__enter__()
        self._elements = iter(self._many)

    def more(self) -> bool:
        try:
            next(self._elements)
        except StopIteration:
            self._many.__exit__(None, None, None)
            return False
        return True

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


def _cached(build: Any) -> Any:
    """Memoise strategy building: the library rebuilds (and re-canonicalises) the strategy of
    every object property on every draw, which costs ~1 s per example on OpenAI's schema."""
    cache: dict[tuple[str, int, int], Any] = {}

    def wrapper(schema: Any, *, alphabet: Any = None, custom_formats: Any = None) -> Any:
        canonical = _fs.encode_canonical_json  # type: ignore[attr-defined]
        key = (canonical(schema), id(alphabet), id(custom_formats))
        strategy = cache.get(key)
        if strategy is None:
            strategy = build(schema, alphabet=alphabet, custom_formats=custom_formats)
            cache[key] = strategy
        return strategy

    return wrapper


def install() -> None:
    if getattr(_fs, "_chromagent_compat", False):
        return
    _fs._chromagent_compat = True  # type: ignore[attr-defined]
    if not hasattr(cu.many, "more"):
        _fs.cu = types.SimpleNamespace(many=_OldStyleMany)  # type: ignore[attr-defined,assignment]
    name = "__from_schema"
    setattr(_fs, name, _cached(getattr(_fs, name)))
