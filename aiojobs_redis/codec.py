"""MessagePack (msgspec) for arguments, results and options; no format that runs code:
bytes read from Redis are data and can never run code."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from .errors import EncodeError
from .options import JobOptions

_encoder = msgspec.msgpack.Encoder()
_any_decoder = msgspec.msgpack.Decoder()
_args_decoder = msgspec.msgpack.Decoder(tuple[list[Any], dict[str, Any]])
_call_decoder = msgspec.msgpack.Decoder(tuple[list[Any], dict[str, Any], dict[str, str]])
#: the MessagePack header of a 3-element array: a payload that carries headers
_WITH_HEADERS = b"\x93"
_options_decoder = msgspec.msgpack.Decoder(JobOptions)


class DecodeError(ValueError):
    """Bytes from Redis are not what we wrote."""


def encode_args(task: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                headers: dict[str, str] | None = None) -> bytes:
    """A job's payload: ``(args, kwargs)``, or ``(args, kwargs, headers)`` when it carries
    headers (string metadata for the worker's middleware, such as a trace context)."""
    try:
        if headers:
            return _encoder.encode((args, kwargs, headers))
        return _encoder.encode((args, kwargs))
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"arguments of task {task!r} cannot be encoded: {e}") from e


def decode_args(data: bytes) -> tuple[list[Any], dict[str, Any]]:
    args, kwargs, _ = decode_call(data)
    return args, kwargs


NO_HEADERS: dict[str, str] = {}


def decode_call(data: bytes) -> tuple[list[Any], dict[str, Any], dict[str, str]]:
    """``(args, kwargs, headers)`` of a payload (headers: :data:`NO_HEADERS` when none;
    never mutate it)."""
    try:
        if data[:1] == _WITH_HEADERS:
            return _call_decoder.decode(data)
        args, kwargs = _args_decoder.decode(data)
    except msgspec.DecodeError as e:
        raise DecodeError(f"undecodable job arguments ({len(data)} bytes): {e}") from e
    return args, kwargs, NO_HEADERS


def encode_value(value: Any) -> bytes:
    """Encode a result or a progress value; raises TypeError when it cannot."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise TypeError(f"cannot encode {type(value).__name__} with MessagePack: {e}") from e


def decode_value(data: bytes) -> Any:
    try:
        return _any_decoder.decode(data)
    except msgspec.DecodeError as e:
        raise DecodeError(f"undecodable value ({len(data)} bytes): {e}") from e


def pack(rows: Iterable[Sequence[Any]]) -> bytes:
    """Rows of script arguments as one MessagePack array of arrays, which scripts read
    with ``cmsgpack.unpack``: one argument per call instead of several per job.

    Redis's cmsgpack predates the ``bin`` types, so bytes are written with a ``str``
    header (Lua strings are byte strings either way).
    """
    return _encoder.encode(
        [[_lua_bytes(v) if type(v) is bytes else _lua_list(v) if type(v) is list else v
          for v in row] for row in rows]
    )


def _lua_list(values: list[Any]) -> list[Any]:
    """A list inside a row (a job record's fields): its bytes written for cmsgpack too."""
    return [_lua_bytes(v) if type(v) is bytes else v for v in values]


def _lua_bytes(value: bytes) -> msgspec.Raw:
    n = len(value)
    if n < 32:
        head = bytes((0xA0 | n,))
    elif n < 0x100:
        head = b"\xd9" + bytes((n,))
    elif n < 0x10000:
        head = b"\xda" + n.to_bytes(2, "big")
    else:
        head = b"\xdb" + n.to_bytes(4, "big")
    return msgspec.Raw(head + value)


def encode_options(options: JobOptions) -> bytes:
    return _encoder.encode(options)


def decode_options(data: bytes) -> JobOptions:
    try:
        return _options_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise DecodeError(f"undecodable job options ({len(data)} bytes): {e}") from e
