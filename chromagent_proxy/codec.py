"""The one JSON entry point: msgspec for typed structs, orjson for generic values.

Every module encodes and decodes through here, so the hot path has exactly one
encoder instance per type and no stdlib ``json``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import orjson

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}

DecodeError = msgspec.DecodeError
ValidationError = msgspec.ValidationError


def encode(obj: Any) -> bytes:
    """Encode a msgspec Struct, dict, list or scalar to JSON bytes."""
    return _encoder.encode(obj)


def decoder(tp: type[T]) -> msgspec.json.Decoder[T]:
    """A cached typed decoder; build one per type once, at import time of the caller."""
    dec = _decoders.get(tp)
    if dec is None:
        dec = msgspec.json.Decoder(tp)
        _decoders[tp] = dec
    return dec


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON into plain Python values (dicts, lists, ...)."""
    return orjson.loads(data)


_exact = msgspec.json.Decoder().decode


def loads_exact(data: bytes) -> Any:
    """Like ``loads``, but integers past 64 bits stay exact ints instead of turning into
    floats: re-encoding then fails loudly (a 400 naming the field) rather than altering them."""
    return _exact(data)


def dumps(obj: Any) -> bytes:
    """Encode plain Python values; faster than msgspec for dicts built on the fly."""
    return orjson.dumps(obj)


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


def convert(obj: Any, tp: type[T]) -> T:
    return msgspec.convert(obj, tp)
