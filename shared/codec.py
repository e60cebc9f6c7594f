"""msgpack codec for Redis stream entries.

Every entry carries one field, `m`: msgpack of `[tag, field1, field2, ...]` for a
message dataclass registered with `@message("tag")`. Binary audio stays raw bytes.
Positional fields keep entries small and decoding cheap on the per-frame path. A registered
dataclass inside a message (a typed hand-off such as `LlmPlan`) travels the same way, as a
msgpack extension, and decodes back into its class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import msgpack

T = TypeVar("T")

FIELD = b"m"
_by_tag: dict[str, type] = {}
_fields: dict[type, tuple[str, ...]] = {}
_tag_of: dict[type, str] = {}


class CodecError(ValueError):
    """An entry that is not a message this codec knows."""


def message(tag: str):
    """Register a dataclass as a bus message under `tag`."""

    def wrap(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        if tag in _by_tag and _by_tag[tag] is not cls:
            raise ValueError(f"tag {tag!r} already used by {_by_tag[tag].__name__}")
        _by_tag[tag] = cls
        _tag_of[cls] = tag
        _fields[cls] = tuple(f.name for f in dataclasses.fields(cls))
        return cls

    return wrap


_NESTED = 1  # msgpack extension code of a registered dataclass inside a message


def _fields_of(msg: Any) -> list[Any]:
    cls = type(msg)
    try:
        names = _fields[cls]
    except KeyError:
        raise CodecError(f"{cls.__name__} is not a registered message") from None
    return [_tag_of[cls], *(getattr(msg, n) for n in names)]


def _nested(obj: Any) -> msgpack.ExtType:
    return msgpack.ExtType(_NESTED, msgpack.packb(_fields_of(obj), use_bin_type=True, default=_nested))


def _build(tag: Any, values: list[Any]) -> Any:
    try:
        cls = _by_tag[tag]
    except (KeyError, TypeError):
        raise CodecError(f"unknown message tag {tag!r}") from None
    try:
        return cls(*values)
    except TypeError as exc:
        raise CodecError(f"bad fields for {tag}: {exc}") from None


def _unnest(code: int, data: bytes) -> Any:
    if code != _NESTED:
        raise CodecError(f"unknown extension {code}")
    tag, *values = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_unnest)
    return _build(tag, values)


def encode(msg: Any) -> bytes:
    return msgpack.packb(_fields_of(msg), use_bin_type=True, default=_nested)


def decode(data: bytes) -> Any:
    try:
        tag, *values = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_unnest)
    except CodecError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CodecError(f"undecodable entry: {exc!r}") from None
    return _build(tag, values)


def entry(msg: Any) -> dict[bytes, bytes]:
    """The field map XADD takes."""
    return {FIELD: encode(msg)}


def from_entry(fields: dict[bytes, bytes]) -> Any:
    try:
        return decode(fields[FIELD])
    except KeyError:
        raise CodecError("entry has no message field") from None
