"""Unsubscribe tokens: encrypted, authenticated, compact, key-rotatable.

A token is the last path segment of an unsubscribe URL (``{public_url}/u/{token}``).
It must not be forgeable or alterable and must not reveal personal data, so the
claims are *encrypted* with a deterministic AEAD, AES-SIV (RFC 5297), as
provided by ``cryptography``'s ``AESSIV``.  Keys are 64 bytes, i.e.
AES-256-SIV (32 bytes of S2V/CMAC key + 32 bytes of CTR key).  AES-SIV needs
no nonce, so minting is a pure function of (key, claims): no randomness, no
clock.  Its synthetic IV is a PRF of the whole plaintext, so two tokens that
differ in any claim differ in every ciphertext byte, and equal claims give an
equal token (harmless: the token only re-states what the holder already has).

Binary layout (71 bytes)::

    offset  size  field
    0       1     key id (1..255), in clear; selects the key for verification
    1       16    AES-SIV synthetic IV (the authentication tag)
    17      54    AES-SIV ciphertext of the payload below

    payload (big-endian, struct ">BBIIQI32s")
    0       1     format version (1)
    1       1     channel: 1 = email, 2 = sms
    2       4     tenant id (u32)
    6       4     topic id (u32, 0 = none)
    10      8     campaign id (u64, 0 = none)
    18      4     issued at, unix seconds (u32; good until 2106)
    22      32    recipient key: HMAC-SHA256 address hash

The associated data is a fixed context label followed by the key-id byte, so the
clear key id cannot be swapped and a key accidentally shared with another
AES-SIV use cannot produce a valid token.  The 71 bytes are encoded as
base64url without padding: **95 characters** from ``[A-Za-z0-9_-]``.  Verification
accepts only that exact, canonical encoding (fixed length, strict alphabet, zero
padding bits in the last character), so no two strings decode to the same token.

A token is honoured for as long as its key id is in the keyring; expiry policy,
if any, is up to the caller (``issued_at`` is returned in the claims).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping
from typing import Final, Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

__all__ = [
    "KEY_BYTES",
    "MAX_TOKEN_CHARS",
    "TOKEN_CHARS",
    "InvalidToken",
    "TokenClaims",
    "TokenKeyring",
]

VERSION: Final = 1
KEY_BYTES: Final = 64  # AES-256-SIV
TOKEN_CHARS: Final = 95  # ceil(71 * 4 / 3), base64url without padding
MAX_TOKEN_CHARS: Final = 200  # anything longer is rejected before any decoding

_AD_LABEL: Final = b"suppress/unsubscribe-token\x00"
_PAYLOAD: Final = struct.Struct(">BBIIQI32s")
_U32_MAX: Final = 0xFFFF_FFFF
_U64_MAX: Final = 0xFFFF_FFFF_FFFF_FFFF
_CHANNEL_CODES: Final[Mapping[str, int]] = {"email": 1, "sms": 2}
_CHANNEL_NAMES: Final[Mapping[int, Literal["email", "sms"]]] = {1: "email", 2: "sms"}
# 71 bytes -> 94 free characters, then a last one carrying 4 bits + 2 zero bits.
_TOKEN_RE: Final = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_CHARS - 1}}}[AEIMQUYcgkosw048]")
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


class TokenClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What an unsubscribe token asserts about its recipient."""

    tenant_id: int
    channel: Literal["email", "sms"]
    address_hash: bytes  # exactly 32 bytes
    topic_id: int | None = None
    campaign_id: int | None = None
    issued_at: int  # unix seconds


class InvalidToken(Exception):
    """The unsubscribe token is malformed, altered, or signed with an unknown key."""


class TokenKeyring:
    """Mints tokens with the current key and verifies tokens under any kept key."""

    __slots__ = ("_ciphers", "_current", "_current_id", "_key_ids")

    def __init__(self, keys: Mapping[int, bytes], current_key_id: int) -> None:
        """Build the ciphers once; keys maps key id (1..255) to a 64-byte AES-256-SIV key."""
        ciphers: dict[int, tuple[AESSIV, list[bytes], bytes]] = {}
        for key_id, key in keys.items():
            if type(key_id) is not int or not 1 <= key_id <= 255:
                raise ValueError(f"token key id must be an int in 1..255, got {key_id!r}")
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise ValueError(f"token key {key_id} must be {KEY_BYTES} bytes (AES-256-SIV)")
            prefix = bytes((key_id,))
            ciphers[key_id] = (AESSIV(key), [_AD_LABEL + prefix], prefix)
        if type(current_key_id) is not int or current_key_id not in ciphers:
            raise ValueError(f"current token key id {current_key_id!r} is not in the keyring")
        self._ciphers: Final = ciphers
        self._current: Final = ciphers[current_key_id]
        self._current_id: Final = current_key_id
        self._key_ids: Final = frozenset(ciphers)

    @property
    def current_key_id(self) -> int:
        """Key id used by :meth:`mint`."""
        return self._current_id

    @property
    def key_ids(self) -> frozenset[int]:
        """Key ids whose tokens are still honoured."""
        return self._key_ids

    def mint(self, claims: TokenClaims) -> str:
        """Return the URL-safe token (95 characters) for the claims; ValueError if invalid."""
        channel = _CHANNEL_CODES.get(claims.channel)
        tenant_id = claims.tenant_id
        topic_id = claims.topic_id
        campaign_id = claims.campaign_id
        issued_at = claims.issued_at
        address_hash = claims.address_hash
        if channel is None:
            raise ValueError(f"unknown channel: {claims.channel!r}")
        if type(tenant_id) is not int or not 0 <= tenant_id <= _U32_MAX:
            raise ValueError("tenant_id must be an int in 0..2**32-1")
        if topic_id is None:
            topic_id = 0
        elif type(topic_id) is not int or not 1 <= topic_id <= _U32_MAX:
            raise ValueError("topic_id must be None or an int in 1..2**32-1")
        if campaign_id is None:
            campaign_id = 0
        elif type(campaign_id) is not int or not 1 <= campaign_id <= _U64_MAX:
            raise ValueError("campaign_id must be None or an int in 1..2**64-1")
        if type(issued_at) is not int or not 0 <= issued_at <= _U32_MAX:
            raise ValueError("issued_at must be unix seconds in 0..2**32-1")
        if type(address_hash) is not bytes or len(address_hash) != 32:
            raise ValueError("address_hash must be exactly 32 bytes")
        payload = _PAYLOAD.pack(VERSION, channel, tenant_id, topic_id, campaign_id, issued_at, address_hash)
        cipher, ad, prefix = self._current
        raw = prefix + cipher.encrypt(payload, ad)
        return binascii.b2a_base64(raw, newline=False)[:TOKEN_CHARS].translate(_TO_URLSAFE).decode("ascii")

    def verify(self, token: str) -> TokenClaims:
        """Decrypt and authenticate a token; raise InvalidToken for anything wrong."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("token is not a string or is too long")
        if len(token) != TOKEN_CHARS or _TOKEN_RE.fullmatch(token) is None:
            raise InvalidToken("token is malformed")
        try:
            raw = base64.urlsafe_b64decode(token + "=")
        except (binascii.Error, ValueError) as exc:  # unreachable after the regex
            raise InvalidToken("token is malformed") from exc
        entry = self._ciphers.get(raw[0])
        if entry is None:
            raise InvalidToken("token key id is unknown")
        cipher, ad, _ = entry
        try:
            payload = cipher.decrypt(raw[1:], ad)
            version, channel, tenant_id, topic_id, campaign_id, issued_at, address_hash = _PAYLOAD.unpack(
                payload
            )
        except (InvalidTag, ValueError, struct.error) as exc:
            raise InvalidToken("token failed authentication") from exc
        channel_name = _CHANNEL_NAMES.get(channel)
        if version != VERSION or channel_name is None:
            raise InvalidToken("token has an unsupported version or channel")
        return TokenClaims(
            tenant_id=tenant_id,
            channel=channel_name,
            address_hash=address_hash,
            topic_id=topic_id or None,
            campaign_id=campaign_id or None,
            issued_at=issued_at,
        )

    def __repr__(self) -> str:
        """Never show key material."""
        return f"TokenKeyring(key_ids={sorted(self._key_ids)}, current={self._current_id})"
