"""MessagePack (msgspec) for arguments, results and options. Never pickle:
bytes read from Redis are data and can never run code."""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import EncodeError
from .options import JobOptions

_encoder = msgspec.msgpack.Encoder()
_any_decoder = msgspec.msgpack.Decoder()
_args_decoder = msgspec.msgpack.Decoder(tuple[list[Any], dict[str, Any]])
_options_decoder = msgspec.msgpack.Decoder(JobOptions)


class DecodeError(ValueError):
    """Bytes from Redis are not what we wrote."""


def encode_args(task: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    try:
        return _encoder.encode((args, kwargs))
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"arguments of task {task!r} cannot be encoded: {e}") from e


def decode_args(data: bytes) -> tuple[list[Any], dict[str, Any]]:
    try:
        return _args_decoder.decode(data)
    except msgspec.DecodeError as e:
        raise DecodeError(f"undecodable job arguments ({len(data)} bytes): {e}") from e


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


def encode_options(options: JobOptions) -> bytes:
    return _encoder.encode(options)


def decode_options(data: bytes) -> JobOptions:
    try:
        return _options_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise DecodeError(f"undecodable job options ({len(data)} bytes): {e}") from e
