"""Tests for suppress.tokens: encrypted, authenticated unsubscribe tokens."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from hypothesis import assume, given
from hypothesis import strategies as st

from suppress import tokens
from suppress.tokens import (
    KEY_BYTES,
    MAX_TOKEN_CHARS,
    TOKEN_CHARS,
    InvalidToken,
    TokenClaims,
    TokenKeyring,
)

KEY_1 = hashlib.sha512(b"token key 1").digest()
KEY_2 = hashlib.sha512(b"token key 2").digest()
KEY_1_OTHER = hashlib.sha512(b"another key that claims to be id 1").digest()
KEYRING = TokenKeyring({1: KEY_1}, current_key_id=1)
URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

U32 = 2**32 - 1
U64 = 2**64 - 1

claims_st = st.builds(
    TokenClaims,
    tenant_id=st.integers(0, U32),
    channel=st.sampled_from(["email", "sms"]),
    address_hash=st.binary(min_size=32, max_size=32),
    topic_id=st.none() | st.integers(1, U32),
    campaign_id=st.none() | st.integers(1, U64),
    issued_at=st.integers(0, U32),
)


def _claims(**overrides: Any) -> TokenClaims:
    fields: dict[str, Any] = {
        "tenant_id": 42,
        "channel": "email",
        "address_hash": hashlib.sha256(b"ola@example.no").digest(),
        "topic_id": 7,
        "campaign_id": 123_456_789,
        "issued_at": 1_750_000_000,
    }
    fields.update(overrides)
    return TokenClaims(**fields)


def _decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --------------------------------------------------------------------------- examples


def test_round_trip_example() -> None:
    claims = _claims()
    token = KEYRING.mint(claims)
    assert KEYRING.verify(token) == claims
    assert len(token) == TOKEN_CHARS == 95


def test_optional_ids_round_trip_as_none() -> None:
    claims = _claims(topic_id=None, campaign_id=None, channel="sms")
    assert KEYRING.verify(KEYRING.mint(claims)) == claims


def test_minting_is_deterministic_and_claim_sensitive() -> None:
    claims = _claims()
    assert KEYRING.mint(claims) == KEYRING.mint(claims)
    assert KEYRING.mint(claims) != KEYRING.mint(_claims(topic_id=None))
    assert KEYRING.mint(claims) != KEYRING.mint(_claims(issued_at=1_750_000_001))


def test_claims_are_a_frozen_msgspec_struct() -> None:
    claims = _claims()
    with pytest.raises(AttributeError):
        claims.tenant_id = 1  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(claims), type=TokenClaims) == claims


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tenant_id": -1}, "tenant_id"),
        ({"tenant_id": 2**32}, "tenant_id"),
        ({"tenant_id": True}, "tenant_id"),
        ({"tenant_id": 1.0}, "tenant_id"),
        ({"topic_id": 0}, "topic_id"),
        ({"topic_id": 2**32}, "topic_id"),
        ({"topic_id": -5}, "topic_id"),
        ({"campaign_id": 0}, "campaign_id"),
        ({"campaign_id": 2**64}, "campaign_id"),
        ({"issued_at": -1}, "issued_at"),
        ({"issued_at": 2**32}, "issued_at"),
        ({"address_hash": b"\x00" * 31}, "address_hash"),
        ({"address_hash": b"\x00" * 33}, "address_hash"),
        ({"address_hash": "00" * 32}, "address_hash"),
        ({"channel": "fax"}, "channel"),
    ],
)
def test_mint_rejects_invalid_claims(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KEYRING.mint(_claims(**overrides))


@pytest.mark.parametrize(
    ("keys", "current"),
    [
        ({}, 1),
        ({1: KEY_1}, 2),
        ({0: KEY_1}, 0),
        ({256: KEY_1}, 256),
        ({1: KEY_1[:32]}, 1),  # AES-128-SIV size: not accepted, keys are AES-256-SIV
        ({1: KEY_1 + b"x"}, 1),
        ({1: "x" * 64}, 1),
        ({True: KEY_1}, True),
    ],
)
def test_keyring_rejects_bad_configuration(keys: dict[Any, Any], current: Any) -> None:
    with pytest.raises(ValueError, match="key"):
        TokenKeyring(keys, current)


def test_keyring_properties_and_repr() -> None:
    keyring = TokenKeyring({1: KEY_1, 2: KEY_2}, 2)
    assert keyring.current_key_id == 2
    assert keyring.key_ids == frozenset({1, 2})
    text = repr(keyring)
    assert KEY_1.hex() not in text
    assert KEY_2.hex() not in text
    assert KEY_BYTES == 64


def test_key_rotation() -> None:
    claims = _claims()
    old_token = TokenKeyring({1: KEY_1}, 1).mint(claims)
    assert old_token[0] == "A"  # key id 1 -> first 6 bits 000000

    rotated = TokenKeyring({1: KEY_1, 2: KEY_2}, 2)
    assert rotated.verify(old_token) == claims
    new_token = rotated.mint(claims)
    assert _decode(new_token)[0] == 2
    assert _decode(old_token)[0] == 1
    assert rotated.verify(new_token) == claims

    retired = TokenKeyring({2: KEY_2}, 2)
    assert retired.verify(new_token) == claims
    with pytest.raises(InvalidToken):
        retired.verify(old_token)


def test_unknown_key_id_rejected() -> None:
    token = KEYRING.mint(_claims())
    with pytest.raises(InvalidToken):
        TokenKeyring({2: KEY_2}, 2).verify(token)


def test_wrong_key_with_same_id_rejected() -> None:
    token = KEYRING.mint(_claims())
    with pytest.raises(InvalidToken):
        TokenKeyring({1: KEY_1_OTHER}, 1).verify(token)


def test_key_id_cannot_be_swapped() -> None:
    # Same key material registered under two ids: the clear id is authenticated.
    keyring = TokenKeyring({1: KEY_1, 2: KEY_1}, 1)
    raw = bytearray(_decode(keyring.mint(_claims())))
    raw[0] = 2
    with pytest.raises(InvalidToken):
        keyring.verify(_encode(bytes(raw)))


def _forge(payload_fields: tuple[int | bytes, ...], key_id: int = 1) -> str:
    """Encrypt an arbitrary payload with the real key (simulates a future/buggy minter)."""
    payload = tokens._PAYLOAD.pack(*payload_fields)
    ad = [tokens._AD_LABEL + bytes((key_id,))]
    return _encode(bytes((key_id,)) + AESSIV(KEY_1).encrypt(payload, ad))


def test_forge_helper_matches_mint() -> None:
    claims = _claims()
    fields = (1, 1, 42, 7, 123_456_789, 1_750_000_000, claims.address_hash)
    assert _forge(fields) == KEYRING.mint(claims)


@pytest.mark.parametrize(
    "fields",
    [
        (2, 1, 42, 7, 1, 1, b"\x00" * 32),  # unknown version
        (0, 1, 42, 7, 1, 1, b"\x00" * 32),
        (1, 0, 42, 7, 1, 1, b"\x00" * 32),  # unknown channel
        (1, 3, 42, 7, 1, 1, b"\x00" * 32),
        (1, 255, 42, 7, 1, 1, b"\x00" * 32),
    ],
)
def test_authentic_but_unsupported_payload_rejected(fields: tuple[int | bytes, ...]) -> None:
    with pytest.raises(InvalidToken):
        KEYRING.verify(_forge(fields))


def test_associated_data_label_matters() -> None:
    # A ciphertext made with the same key but without the context label is rejected.
    payload = tokens._PAYLOAD.pack(1, 1, 42, 7, 1, 1, b"\x00" * 32)
    token = _encode(b"\x01" + AESSIV(KEY_1).encrypt(payload, [b"\x01"]))
    with pytest.raises(InvalidToken):
        KEYRING.verify(token)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "A",
        "A" * 94,
        "A" * 95,
        "A" * 96,
        "A" * MAX_TOKEN_CHARS,
        "A" * (MAX_TOKEN_CHARS + 1),
        "A" * 10_000_000,
        "é" * 95,
        "\x00" * 95,
        "💥" * 95,
        " " * 95,
        "=" * 95,
        "+" * 95,
        "/" * 95,
    ],
)
def test_malformed_strings_rejected(bad: str) -> None:
    with pytest.raises(InvalidToken):
        KEYRING.verify(bad)


@pytest.mark.parametrize("bad", [None, b"A" * 95, 95, ["A" * 95], bytearray(95)])
def test_non_strings_rejected(bad: Any) -> None:
    with pytest.raises(InvalidToken):
        KEYRING.verify(bad)


def test_encoding_variants_rejected() -> None:
    token = KEYRING.mint(_claims())
    for variant in (
        token + "=",  # padding
        token + "A",
        token[:-1],
        " " + token,
        token + "\n",
        token.replace("-", "+").replace("_", "/") if ("-" in token or "_" in token) else "!",
        token[:50] + "\n" + token[50:],
    ):
        with pytest.raises(InvalidToken):
            KEYRING.verify(variant)


def test_non_canonical_last_character_rejected() -> None:
    # The last character carries 4 data bits and 2 padding bits; setting the
    # padding bits decodes to the same bytes and must still be rejected.
    token = KEYRING.mint(_claims())
    last = ALPHABET.index(token[-1])
    assert last % 4 == 0
    for pad in (1, 2, 3):
        variant = token[:-1] + ALPHABET[last + pad]
        assert _decode(variant) == _decode(token)
        with pytest.raises(InvalidToken):
            KEYRING.verify(variant)


# --------------------------------------------------------------------------- properties


@given(claims_st)
def test_round_trip(claims: TokenClaims) -> None:
    token = KEYRING.mint(claims)
    assert KEYRING.verify(token) == claims


@given(claims_st)
def test_token_is_short_and_url_safe(claims: TokenClaims) -> None:
    token = KEYRING.mint(claims)
    assert len(token) == TOKEN_CHARS
    assert len(token) <= 110
    assert URL_SAFE.fullmatch(token)
    assert "=" not in token


@given(claims_st, st.data())
def test_any_character_change_rejected(claims: TokenClaims, data: st.DataObject) -> None:
    token = KEYRING.mint(claims)
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from(ALPHABET) | st.characters())
    assume(replacement != token[index])
    altered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(InvalidToken):
        KEYRING.verify(altered)


@given(claims_st, st.data())
def test_any_bit_flip_rejected(claims: TokenClaims, data: st.DataObject) -> None:
    raw = bytearray(_decode(KEYRING.mint(claims)))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidToken):
        KEYRING.verify(_encode(bytes(raw)))


@given(claims_st, st.data())
def test_insertions_and_deletions_rejected(claims: TokenClaims, data: st.DataObject) -> None:
    token = KEYRING.mint(claims)
    index = data.draw(st.integers(0, len(token)))
    if data.draw(st.booleans()) and index < len(token):
        altered = token[:index] + token[index + 1 :]
    else:
        altered = token[:index] + data.draw(st.text(min_size=1, max_size=3)) + token[index:]
    with pytest.raises(InvalidToken):
        KEYRING.verify(altered)


@given(claims_st)
def test_keyring_without_the_key_rejects(claims: TokenClaims) -> None:
    token = KEYRING.mint(claims)
    with pytest.raises(InvalidToken):
        TokenKeyring({2: KEY_2, 3: KEY_1_OTHER}, 2).verify(token)
    with pytest.raises(InvalidToken):
        TokenKeyring({1: KEY_1_OTHER}, 1).verify(token)


@given(claims_st)
def test_rotation_property(claims: TokenClaims) -> None:
    old = TokenKeyring({1: KEY_1}, 1).mint(claims)
    rotated = TokenKeyring({1: KEY_1, 2: KEY_2}, 2)
    new = rotated.mint(claims)
    assert _decode(new)[0] == 2
    assert rotated.verify(old) == rotated.verify(new) == claims
    with pytest.raises(InvalidToken):
        TokenKeyring({2: KEY_2}, 2).verify(old)


@given(
    st.one_of(
        st.text(),
        st.text(alphabet=ALPHABET, min_size=TOKEN_CHARS, max_size=TOKEN_CHARS),
        st.binary(min_size=70, max_size=70).map(lambda b: _encode(b"\x01" + b)),
        st.binary(min_size=71, max_size=71).map(_encode),
        st.text(min_size=MAX_TOKEN_CHARS - 5, max_size=MAX_TOKEN_CHARS + 50),
    )
)
def test_arbitrary_strings_only_raise_invalid_token(text: str) -> None:
    try:
        KEYRING.verify(text)
    except InvalidToken:
        pass
    else:  # pragma: no cover - would be a forgery
        pytest.fail(f"arbitrary string verified: {text!r}")


@given(claims_st)
def test_address_hash_not_in_clear(claims: TokenClaims) -> None:
    token = KEYRING.mint(claims)
    raw = _decode(token)
    address_hash = claims.address_hash
    assert address_hash.hex() not in token.lower()
    for offset in range(3):  # every base64 alignment of the hash
        encoded = _encode(b"\x00" * offset + address_hash)[4:40]
        assert encoded not in token
    for start in range(0, 32 - 8 + 1):  # no 8-byte window of the hash in the raw bytes
        assert address_hash[start : start + 8] not in raw


@given(claims_st, st.binary(min_size=32, max_size=32))
def test_changing_only_the_hash_changes_the_whole_token(claims: TokenClaims, other_hash: bytes) -> None:
    assume(other_hash != claims.address_hash)
    token_a = KEYRING.mint(claims)
    token_b = KEYRING.mint(msgspec.structs.replace(claims, address_hash=other_hash))
    assert token_a != token_b
    common_prefix = next(i for i, (a, b) in enumerate(zip(token_a, token_b, strict=True)) if a != b)
    assert common_prefix < 20  # the SIV right after the key id already differs
    differing = sum(a != b for a, b in zip(token_a, token_b, strict=True))
    assert differing > 60  # random-looking: ~1/64 of positions coincide by chance


# --------------------------------------------------------------------------- minting many at once

# A token minted by the release before batch minting existed: it must keep verifying, and the
# batch path must produce it again.
PINNED = "Ae_MtMQowW_F-oLFNZ1vwUxOCdhIOmqYAghwsE_DkoC9ayL1XTtF9Ll1IGfnmES6KMzO7lSEaPqmIRP30cEYcO2vxD6aJhg"

batch_st = st.fixed_dictionaries(
    {
        "tenant_id": st.integers(0, U32),
        "channel": st.sampled_from(["email", "sms"]),
        "topic_id": st.none() | st.integers(1, U32),
        "campaign_id": st.none() | st.integers(1, U64),
        "issued_at": st.integers(0, U32),
    }
)
# Below and above the size where mint_many switches to the vectorised path.
hashes_st = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=tokens.MINT_MANY_FROM * 3)


def test_an_existing_token_keeps_verifying_and_batch_minting_reproduces_it() -> None:
    claims = _claims()
    assert KEYRING.verify(PINNED) == claims
    shared = {k: v for k, v in msgspec.structs.asdict(claims).items() if k != "address_hash"}
    other = hashlib.sha256(b"kari@example.no").digest()
    many = KEYRING.mint_many(**shared, address_hashes=[claims.address_hash, other] * tokens.MINT_MANY_FROM)
    assert many[0] == many[-2] == PINNED
    assert KEYRING.verify(many[1]).address_hash == other


@given(batch_st, hashes_st)
def test_mint_many_equals_minting_each(shared: dict[str, Any], hashes: list[bytes]) -> None:
    ring = TokenKeyring({1: KEY_1, 2: KEY_2}, current_key_id=2)
    many = ring.mint_many(**shared, address_hashes=hashes)
    assert many == [ring.mint(TokenClaims(**shared, address_hash=h)) for h in hashes]
    for token, h in zip(many, hashes, strict=True):
        assert len(token) == TOKEN_CHARS and URL_SAFE.fullmatch(token)
        assert ring.verify(token) == TokenClaims(**shared, address_hash=h)
        assert h.hex() not in _decode(token).hex()  # no personal data in clear
        # rotation: a keyring without key 2 rejects it
        with pytest.raises(InvalidToken):
            TokenKeyring({1: KEY_1}, current_key_id=1).verify(token)


@given(batch_st, hashes_st, st.data())
def test_a_batch_token_altered_anywhere_is_rejected(
    shared: dict[str, Any], hashes: list[bytes], data: st.DataObject
) -> None:
    many = KEYRING.mint_many(**shared, address_hashes=hashes)
    token = data.draw(st.sampled_from(many))
    raw = bytearray(_decode(token))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidToken):
        KEYRING.verify(_encode(bytes(raw)))


def test_batch_tokens_survive_rotation() -> None:
    old = TokenKeyring({1: KEY_1}, current_key_id=1)
    minted = old.mint_many(
        tenant_id=1,
        channel="sms",
        topic_id=None,
        campaign_id=None,
        issued_at=0,
        address_hashes=[bytes([i]) * 32 for i in range(tokens.MINT_MANY_FROM * 2)],
    )
    rotated = TokenKeyring({1: KEY_1, 2: KEY_2}, current_key_id=2)
    assert [rotated.verify(t).address_hash[0] for t in minted] == list(range(tokens.MINT_MANY_FROM * 2))


@pytest.mark.parametrize(
    ("hashes", "overrides"),
    [
        ([b"\x00" * 31] + [b"\x00" * 32] * 40, {}),
        ([b"\x00" * 32] * 40 + [b"\x00" * 33], {}),
        ([b"\x00" * 32] * 39 + [bytearray(32)], {}),
        ([b"\x00" * 32] * 40, {"tenant_id": -1}),
        ([b"\x00" * 32] * 40, {"topic_id": 0}),
        ([b"\x00" * 32] * 40, {"channel": "fax"}),
        ([b"\x00" * 32] * 4, {"issued_at": 2**32}),
    ],
)
def test_mint_many_rejects_what_mint_rejects(hashes: list[Any], overrides: dict[str, Any]) -> None:
    shared: dict[str, Any] = {
        "tenant_id": 1,
        "channel": "email",
        "topic_id": None,
        "campaign_id": None,
        "issued_at": 0,
    }
    shared.update(overrides)
    with pytest.raises(ValueError, match=r"must|channel"):
        KEYRING.mint_many(**shared, address_hashes=hashes)
