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

Minting many tokens at once (``mint_many``, the pre-send check's batches) gives exactly the
tokens ``mint`` gives, byte for byte, but runs AES-SIV (RFC 5297) itself over the whole batch:
S2V's CMAC chain is four AES-ECB calls, each over one block of every token, and the CTR
keystream is one AES-ECB call over every token's four counter blocks; the XORs are done on
whole buffers as integers, and the tokens are base64-encoded in one call (71-byte tokens padded
to 72 bytes line up on 96-character boundaries). Per token, only slicing is left in Python.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
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
_HEAD: Final = struct.Struct(">BBIIQI")  # the payload before the address hash: 22 bytes
_BLOCK: Final = 16
_RECORD: Final = 64  # a payload (54 bytes) with CMAC's padding (0x80, then zeros): 4 blocks
_CMAC_PAD: Final = b"\x80" + bytes(_RECORD - _PAYLOAD.size - 1)
# RFC 5297 2.6: the counter is the IV with bits 63 and 31 (of its last 64) cleared.
_CTR_MASK: Final = np.frombuffer(b"\xff" * 8 + b"\x7f\xff\xff\xff\x7f\xff\xff\xff", dtype=np.uint8)
# The four counter blocks of a token, Q + 0..3: the last 32 bits of Q are below 2**31, so adding
# 3 never carries out of them.
_CTR_STEPS: Final = np.arange(4, dtype=">u4").reshape(1, 4, 1)
# At fewer tokens than this, one AESSIV call each is cheaper than setting the batch up.
MINT_MANY_FROM: Final = 32


def _dbl(block: bytes) -> bytes:
    """Doubling in GF(2**128), as S2V and CMAC's subkeys use it (RFC 5297 2.3)."""
    n = int.from_bytes(block, "big") << 1
    if n >> 128:
        n = (n ^ 0x87) & ((1 << 128) - 1)
    return n.to_bytes(16, "big")


def _xor(a: bytes, b: bytes) -> bytes:
    """a XOR b, equal lengths (the per-key constants)."""
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


class _BatchSIV:
    """AES-SIV encryption of many 54-byte payloads under one key and one associated data."""

    __slots__ = ("_ctr", "_mac", "_mask")

    def __init__(self, key: bytes, associated_data: bytes) -> None:
        mac_key, ctr_key = key[: KEY_BYTES // 2], key[KEY_BYTES // 2 :]
        self._mac = Cipher(algorithms.AES(mac_key), modes.ECB())  # noqa: S305 - the blocks of CMAC
        self._ctr = Cipher(algorithms.AES(ctr_key), modes.ECB())  # noqa: S305 - the blocks of CTR
        aes = self._mac.encryptor()
        k1 = _dbl(aes.update(bytes(_BLOCK)))  # CMAC subkeys (RFC 4493)
        k2 = _dbl(k1)
        # S2V: D = dbl(CMAC(0^128)) xor CMAC(AD); both fixed for a key, so computed once.
        d = _xor(_dbl(_cmac(aes, bytes(_BLOCK), k1, k2)), _cmac(aes, associated_data, k1, k2))
        # A 54-byte plaintext is >= 16 bytes: T = P xorend D, then CMAC(T) with its last, partial
        # block padded and XORed with k2. Both XORs are fixed too: one 64-byte mask per record.
        mask = bytearray(_RECORD)
        mask[_PAYLOAD.size - _BLOCK : _PAYLOAD.size] = d
        mask[_RECORD - _BLOCK :] = _xor(bytes(mask[_RECORD - _BLOCK :]), k2)
        self._mask = np.frombuffer(bytes(mask), dtype=np.uint8)

    def encrypt(self, records: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """(IVs, ciphertexts) of n records (n x 64: payload + CMAC padding): n x 16 and n x 64,
        of which each row's first 54 bytes are the ciphertext."""
        n = len(records)
        blocks = (records ^ self._mask).reshape(n, _RECORD // _BLOCK, _BLOCK)
        aes = self._mac.encryptor()
        x = np.zeros((n, _BLOCK), dtype=np.uint8)
        for j in range(_RECORD // _BLOCK):  # CMAC's chain, one block of every token per call
            x = np.frombuffer(aes.update((x ^ blocks[:, j]).tobytes()), dtype=np.uint8).reshape(n, _BLOCK)
        counters = np.repeat((x & _CTR_MASK)[:, None, :], _RECORD // _BLOCK, axis=1)
        low = counters[:, :, _BLOCK - 4 :].copy().view(">u4")  # below 2**31: + 3 never carries
        low += _CTR_STEPS
        counters[:, :, _BLOCK - 4 :] = low.view(np.uint8).reshape(n, _RECORD // _BLOCK, 4)
        keystream = np.frombuffer(self._ctr.encryptor().update(counters.tobytes()), dtype=np.uint8)
        return x, records ^ keystream.reshape(n, _RECORD)


def _cmac(aes: CipherContext, message: bytes, k1: bytes, k2: bytes) -> bytes:
    """CMAC of one message (RFC 4493): the per-key constants of S2V."""
    blocks = [message[i : i + _BLOCK] for i in range(0, len(message), _BLOCK)] or [b""]
    last = blocks.pop()
    last = _xor(last, k1) if len(last) == _BLOCK else _xor(last + _CMAC_PAD[: _BLOCK - len(last)], k2)
    x = bytes(_BLOCK)
    for block in blocks:
        x = aes.update(_xor(x, block))
    return aes.update(_xor(x, last))


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

    __slots__ = ("_batch", "_ciphers", "_current", "_current_id", "_key_ids")

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
        self._batch: Final = _BatchSIV(keys[current_key_id], _AD_LABEL + bytes((current_key_id,)))

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

    def mint_many(
        self,
        *,
        tenant_id: int,
        channel: Literal["email", "sms"],
        topic_id: int | None,
        campaign_id: int | None,
        issued_at: int,
        address_hashes: Sequence[bytes],
    ) -> list[str]:
        """The tokens ``mint`` gives for these claims and each address hash, in one pass.

        Exactly equal to minting each one (same key, same bytes); ValueError if any claim is invalid.
        """
        n = len(address_hashes)
        if n < MINT_MANY_FROM:
            return [
                self.mint(
                    TokenClaims(
                        tenant_id=tenant_id,
                        channel=channel,
                        address_hash=h,
                        topic_id=topic_id,
                        campaign_id=campaign_id,
                        issued_at=issued_at,
                    )
                )
                for h in address_hashes
            ]
        # The claims shared by the batch are checked by minting its first token the usual way.
        first = self.mint(
            TokenClaims(
                tenant_id=tenant_id,
                channel=channel,
                address_hash=address_hashes[0],
                topic_id=topic_id,
                campaign_id=campaign_id,
                issued_at=issued_at,
            )
        )
        if set(map(type, address_hashes)) != {bytes} or set(map(len, address_hashes)) != {32}:
            raise ValueError("address_hash must be exactly 32 bytes")
        head = _HEAD.pack(
            VERSION, _CHANNEL_CODES[channel], tenant_id, topic_id or 0, campaign_id or 0, issued_at
        )
        records = np.empty((n, _RECORD), dtype=np.uint8)  # payload + CMAC padding per token
        records[:, : _HEAD.size] = np.frombuffer(head, dtype=np.uint8)
        hashes = np.frombuffer(b"".join(address_hashes), dtype=np.uint8)
        records[:, _HEAD.size : _PAYLOAD.size] = hashes.reshape(n, 32)
        records[:, _PAYLOAD.size :] = np.frombuffer(_CMAC_PAD, dtype=np.uint8)
        ivs, ciphertexts = self._batch.encrypt(records)
        # key id + IV + ciphertext + one zero byte: 72 bytes, which base64 encodes in 96
        # characters whose first 95 are the 71-byte token's encoding.
        raw = np.zeros((n, 72), dtype=np.uint8)
        raw[:, 0] = self._current_id
        raw[:, 1:17] = ivs
        raw[:, 17:71] = ciphertexts[:, : _PAYLOAD.size]
        text = binascii.b2a_base64(raw.tobytes(), newline=False).translate(_TO_URLSAFE).decode("ascii")
        tokens = [text[i : i + TOKEN_CHARS] for i in range(0, 96 * n, 96)]
        if tokens[0] != first:  # the batch path and the one-token path must agree
            raise AssertionError("batch minting disagrees with mint()")
        return tokens

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
