"""Opaque page cursors (msgpack in unpadded base64url), and the base64url the service hands out."""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

import msgspec

from suppress.errors import InvalidInput

T = TypeVar("T")


def b64url(raw: bytes) -> str:
    """Unpadded base64url, as it goes into URLs and cookies."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    """The bytes of unpadded base64url; ValueError when it is not."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None


def encode(position: Any) -> str:
    """A cursor for `position` (a Struct or plain value): where the next page starts."""
    return b64url(msgspec.msgpack.encode(position))


def decode(cursor: str, type: type[T]) -> T:
    """The position in a cursor this service handed out; InvalidInput for anything else."""
    try:
        return msgspec.msgpack.decode(unb64url(cursor), type=type)
    except (ValueError, msgspec.DecodeError):
        raise InvalidInput("cursor is not one this service handed out") from None
