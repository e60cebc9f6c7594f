"""msgpack codec for Redis stream entries.

Every entry carries one field, `m`: msgpack of `[tag, field1, field2, ...]` for a
message dataclass registered with `@message("tag")`. Binary audio stays raw bytes.
Positional fields keep entries small and decoding cheap on the per-frame path.
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


def tag_of(msg: Any) -> str:
    return _tag_of[type(msg)]


def encode(msg: Any) -> bytes:
    cls = type(msg)
    try:
        names = _fields[cls]
    except KeyError:
        raise CodecError(f"{cls.__name__} is not a registered message") from None
    return msgpack.packb([_tag_of[cls], *(getattr(msg, n) for n in names)], use_bin_type=True)


def decode(data: bytes) -> Any:
    try:
        tag, *values = msgpack.unpackb(data, raw=False, strict_map_key=False)
        cls = _by_tag[tag]
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise CodecError(f"undecodable entry: {exc!r}") from None
    try:
        return cls(*values)
    except TypeError as exc:
        raise CodecError(f"bad fields for {tag}: {exc}") from None


def entry(msg: Any) -> dict[bytes, bytes]:
    """The field map XADD takes."""
    return {FIELD: encode(msg)}


def from_entry(fields: dict[bytes, bytes]) -> Any:
    try:
        return decode(fields[FIELD])
    except KeyError:
        raise CodecError("entry has no message field") from None
