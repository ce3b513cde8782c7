"""Tests for suppress.addresses: email/phone normalisation and keyed hashing."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from suppress.addresses import (
    AddressHasher,
    _normalise_email_unicode,
    normalise,
    normalise_email,
    normalise_phone,
)

KEY_A = hashlib.sha256(b"test key A").digest()
KEY_B = hashlib.sha256(b"test key B").digest()
ATEXT_SYMBOLS = "!#$%&'*+/=?^_`{|}~-"


# --------------------------------------------------------------------------- email examples


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ola@example.no", "ola@example.no"),
        ("Ola.Nordmann@Example.NO", "ola.nordmann@example.no"),
        ("  ola@example.no\t\n", "ola@example.no"),
        ("\u00a0ola@example.no\u2003", "ola@example.no"),  # Unicode whitespace trimmed
        ("o'brien+news@mail.example.co.uk", "o'brien+news@mail.example.co.uk"),
        (f"a{ATEXT_SYMBOLS}z@example.com", f"a{ATEXT_SYMBOLS}z@example.com"),
        ("first.middle.last@example.com", "first.middle.last@example.com"),
        ("a@123.example", "a@123.example"),  # numeric labels fine, only the TLD may not be
        ("a@example.c0m", "a@example.c0m"),
        ("a@my-host.example.no", "a@my-host.example.no"),
        # IDN domains -> punycode
        ("Ola@Bücher.no", "ola@xn--bcher-kva.no"),
        ("ola@BÜCHER.NO", "ola@xn--bcher-kva.no"),
        ("ola@xn--bcher-kva.no", "ola@xn--bcher-kva.no"),  # ASCII xn-- kept as is
        ("OLA@XN--BCHER-KVA.NO", "ola@xn--bcher-kva.no"),
        ("ola@bücher。no", "ola@xn--bcher-kva.no"),  # UTS46 maps the ideographic full stop
        ("ola@ex\u200bample.no", "ola@example.no"),  # UTS46 drops ZWSP from domains
        ("user@例え.テスト", "user@xn--r8jz45g.xn--zckzah"),
        # SMTPUTF8 local parts
        ("Jøran@example.no", "jøran@example.no"),
        ("ÅSE@EXAMPLE.NO", "åse@example.no"),
        ("δοκιμή@παράδειγμα.δοκιμή", "δοκιμή@xn--hxajbheg2az3al.xn--jxalpdlp"),
        ("शिव@डाटा.भारत", "शिव@xn--c2bd1gb.xn--h2brj9c"),  # combining marks allowed
    ],
)
def test_normalise_email_valid(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "plainaddress",
        "@example.no",
        "ola@",
        "ola@@example.no",
        "ola@sub@example.no",
        "ola..nordmann@example.no",
        ".ola@example.no",
        "ola.@example.no",
        '"ola"@example.no',
        '"ola nordmann"@example.no',
        '"a@b"@example.no',
        "ola nordmann@example.no",
        "ola\tnordmann@example.no",
        "ola\u00a0nordmann@example.no",
        "ola(comment)@example.no",
        "ola,x@example.no",
        "ola\x00@example.no",
        "ola\u200b@example.no",  # zero-width space (format char)
        "😀@example.no",  # symbols are not letters
        "ola@example",  # missing TLD
        "ola@localhost",
        "ola@example.123",  # all-numeric TLD
        "ola@1.2.3.4",
        "ola@[192.168.0.1]",
        "ola@example..no",
        "ola@.example.no",
        "ola@example.no.",
        "ola@-example.no",
        "ola@example-.no",
        "ola@exa_mple.no",
        "ola@exa mple.no",
        "ola@example.no\x00",
        "ola@☃.com",  # disallowed in IDNA 2008: un-encodable
        "ola@bücher..no",
        "ola@xn--.no",
    ],
)
def test_normalise_email_invalid(raw: str) -> None:
    assert normalise_email(raw) is None


def test_nfc_and_nfd_give_same_result() -> None:
    nfc = unicodedata.normalize("NFC", "Åse.Ødegård@Bücher.no")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    assert normalise_email(nfc) == normalise_email(nfd) == "åse.ødegård@xn--bcher-kva.no"


def test_local_part_length_limit_ascii() -> None:
    assert normalise_email("a" * 64 + "@example.no") == "a" * 64 + "@example.no"
    assert normalise_email("a" * 65 + "@example.no") is None


def test_local_part_length_limit_counts_utf8_octets() -> None:
    assert normalise_email("ø" * 32 + "@example.no") is not None  # 64 octets
    assert normalise_email("ø" * 33 + "@example.no") is None  # 66 octets, 33 characters


def test_label_length_limit() -> None:
    assert normalise_email("a@" + "b" * 63 + ".no") is not None
    assert normalise_email("a@" + "b" * 64 + ".no") is None


def test_total_length_limit() -> None:
    local = "a" * 64
    # 64 + 1 + 189 = 254
    domain_254 = ".".join(["b" * 62] * 3) + ".no"
    assert len(domain_254) == 191
    addr = f"{local}@{domain_254[2:]}"
    assert len(addr) == 254
    assert normalise_email(addr) == addr
    longer = f"{local}@b{domain_254[2:]}"
    assert len(longer) == 255
    assert normalise_email(longer) is None


def test_total_length_limit_unicode_path() -> None:
    # Non-ASCII local part: limit applies to UTF-8 octets of the normalised address.
    local = "ø" * 32  # 64 octets
    domain = ".".join(["b" * 62] * 3) + ".no"  # 191 octets
    assert normalise_email(f"{local}@{domain[2:]}") is not None  # 254 octets
    assert normalise_email(f"{local}@b{domain[2:]}") is None  # 255 octets


# --------------------------------------------------------------------------- phone examples


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+47 912 34 567", "NO", "+4791234567"),
        ("912 34 567", "NO", "+4791234567"),
        ("91234567", "NO", "+4791234567"),
        ("912-34-567", "NO", "+4791234567"),
        ("(+47) 912 34 567", "NO", "+4791234567"),
        ("0047 912 34 567", "NO", "+4791234567"),
        ("004791234567", "NO", "+4791234567"),
        ("0047 912 34 567", "US", "+4791234567"),  # leading 00 outside '00' regions
        ("+47 912 34 567", "US", "+4791234567"),
        ("  +47 912 34 567  ", "no", "+4791234567"),  # lower-case region accepted
        ("+1 650-253-0000", "NO", "+16502530000"),
        ("(650) 253-0000", "US", "+16502530000"),
        ("+46 70 123 45 67", "NO", "+46701234567"),
    ],
)
def test_normalise_phone_valid(raw: str, region: str, expected: str) -> None:
    assert normalise_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("", "NO"),
        ("abc", "NO"),
        ("123", "NO"),
        ("+47 12345", "NO"),  # too short for Norway
        ("+47 912 34 567 89", "NO"),  # too long
        ("912 34 567", "US"),  # not a valid US number
        ("912 34 567", "XX"),  # unknown region, national number
        ("912 34 567", ""),
        ("+999 1234567", "NO"),  # unassigned country code
        ("9" * 300, "NO"),
        ("ola@example.no", "NO"),
    ],
)
def test_normalise_phone_invalid(raw: str, region: str) -> None:
    assert normalise_phone(raw, region) is None


def test_normalise_dispatch() -> None:
    assert normalise("email", " Ola@Example.no ", "NO") == "ola@example.no"
    assert normalise("sms", "912 34 567", "NO") == "+4791234567"
    assert normalise("email", "nope", "NO") is None
    assert normalise("sms", "nope", "NO") is None
    with pytest.raises(ValueError, match="unknown channel"):
        normalise("fax", "123", "NO")


# --------------------------------------------------------------------------- hashing examples


@pytest.mark.parametrize("key_len", [32, 63, 64, 65, 100])
def test_hash_matches_stdlib_hmac(key_len: int) -> None:
    key = bytes(range(key_len))
    hasher = AddressHasher(key)
    for channel, addr in [
        ("email", "ola@example.no"),
        ("sms", "+4791234567"),
        ("email", "jø@x.no"),
    ]:
        expected = hmac.new(key, f"{channel}:{addr}".encode(), hashlib.sha256).digest()
        assert hasher.hash(channel, addr) == expected


def test_hash_separates_channels() -> None:
    hasher = AddressHasher(KEY_A)
    assert hasher.hash("email", "4791234567") != hasher.hash("sms", "4791234567")


def test_hasher_rejects_short_key_and_unknown_channel() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        AddressHasher(b"short")
    with pytest.raises(ValueError, match="unknown channel"):
        AddressHasher(KEY_A).hash("fax", "x")


def test_hasher_repr_hides_key() -> None:
    assert KEY_A.hex() not in repr(AddressHasher(KEY_A))


def test_hasher_is_reusable() -> None:
    hasher = AddressHasher(KEY_A)
    first = hasher.hash("email", "a@example.no")
    hasher.hash("email", "b@example.no")
    assert hasher.hash("email", "a@example.no") == first


# --------------------------------------------------------------------------- property tests

LOCAL_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789" + ATEXT_SYMBOLS + "æøåäöüéèçñπδλжяあ日本"
LABEL_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789æøåäöüéñ"

atoms = st.text(alphabet=LOCAL_ALPHABET, min_size=1, max_size=12)
local_parts = st.lists(atoms, min_size=1, max_size=4).map(".".join)
labels = st.text(alphabet=LABEL_ALPHABET, min_size=1, max_size=15).filter(
    lambda s: not s.startswith("-") and not s.endswith("-")
)
tlds = st.sampled_from(["no", "com", "se", "org", "xn--p1ai", "dk", "рф", "テスト"])
domains = st.builds(lambda labs, tld: ".".join([*labs, tld]), st.lists(labels, min_size=1, max_size=3), tlds)
plausible_emails = st.builds(lambda lp, d: f"{lp}@{d}", local_parts, domains)
whitespace = st.text(alphabet=" \t\r\n\u00a0\u2003\u3000", max_size=3)

# Email-ish noise: hits edge cases of both paths.
noisy_emails = st.text(alphabet='aZ9.-_+@"( ø\u0308Ü\u200bé.xn', max_size=40)


def _vary_case(text: str, flags: list[bool]) -> str:
    """Upper-case characters where flagged, when lower() reverses it exactly."""
    out = []
    for ch, flag in zip(text, flags + [False] * len(text), strict=False):
        upper = ch.upper()
        out.append(upper if flag and len(upper) == 1 and upper.lower() == ch else ch)
    return "".join(out)


@given(st.one_of(st.text(), st.emails(), plausible_emails, noisy_emails))
def test_email_normalisation_is_idempotent(raw: str) -> None:
    result = normalise_email(raw)
    if result is not None:
        assert normalise_email(result) == result
        assert result == result.strip()
        assert result.count("@") == 1
        assert result.partition("@")[2].isascii()


@given(st.text(alphabet="aB0.-_+!@'x\"( \t", max_size=80))
def test_ascii_fast_path_agrees_with_unicode_path(raw: str) -> None:
    assert normalise_email(raw) == _normalise_email_unicode(raw.strip())


@given(st.emails())
def test_hypothesis_emails_are_mostly_accepted(raw: str) -> None:
    # st.emails() yields RFC-valid dot-atom addresses; ours rejects only length/TLD cases.
    result = normalise_email(raw)
    if result is None:
        local, _, domain = raw.rpartition("@")
        tld = domain.rsplit(".", 1)[-1]
        assert len(raw) > 254 or len(local) > 64 or tld.isdigit() or len(domain) > 253
    else:
        assert result == raw.lower()


@given(plausible_emails, st.lists(st.booleans(), max_size=60), whitespace, whitespace)
def test_spellings_give_same_address_and_hash(base: str, flags: list[bool], lead: str, trail: str) -> None:
    canonical = normalise_email(base)
    assume(canonical is not None)
    assert canonical is not None
    hasher = AddressHasher(KEY_A)
    expected_hash = hasher.hash("email", canonical)
    variants = [
        _vary_case(base, flags),
        lead + base + trail,
        unicodedata.normalize("NFD", base),
        unicodedata.normalize("NFD", lead + _vary_case(base, flags) + trail),
        canonical,
    ]
    for variant in variants:
        normalised = normalise_email(variant)
        assert normalised == canonical, variant
        assert hasher.hash("email", normalised) == expected_hash


@given(st.sampled_from(["email", "sms"]), st.text())
def test_hash_is_32_bytes_and_key_dependent(channel: str, address: str) -> None:
    digest_a = AddressHasher(KEY_A).hash(channel, address)
    digest_b = AddressHasher(KEY_B).hash(channel, address)
    assert len(digest_a) == 32
    assert len(digest_b) == 32
    assert digest_a != digest_b
    assert digest_a == hmac.new(KEY_A, f"{channel}:{address}".encode(), hashlib.sha256).digest()


@given(st.binary(min_size=32, max_size=200), st.binary(min_size=32, max_size=200), st.text())
def test_different_keys_give_different_hashes(key1: bytes, key2: bytes, address: str) -> None:
    assume(key1 != key2)
    if len(key1) <= 64 and len(key2) <= 64:
        # HMAC zero-pads keys to the block size, so b"k" and b"k\0" are the same key.
        assume(key1.rstrip(b"\0") != key2.rstrip(b"\0"))
    assert AddressHasher(key1).hash("email", address) != AddressHasher(key2).hash("email", address)


@given(st.text(), st.text(max_size=4))
def test_normalise_never_raises(raw: str, region: str) -> None:
    for channel in ("email", "sms"):
        result = normalise(channel, raw, region)
        assert result is None or isinstance(result, str)


@given(
    st.from_regex(r"\A(\+47|0047)?[ -]?9[0-9]{2}[ -]?[0-9]{2}[ -]?[0-9]{3}\Z"),
)
def test_norwegian_mobile_spellings(raw: str) -> None:
    digits = "".join(ch for ch in raw if ch.isdigit())
    national = digits[-8:]
    assert normalise_phone(raw, "NO") == "+47" + national
    result = normalise_phone(raw, "NO")
    assert result is not None
    assert normalise_phone(result, "NO") == result


def test_huge_inputs_are_rejected_cheaply() -> None:
    assert normalise_email("a" * 1_000_000 + "@example.no") is None
    assert normalise_email("ø" * 1_000_000 + "@example.no") is None
    assert normalise_email("ola@b" + "\u200b" * 2000 + ".no") is None  # beyond the input bound
    assert normalise_phone("9" * 1_000_000, "NO") is None


@given(
    st.sampled_from(["email", "sms"]),
    st.lists(st.none() | st.text(max_size=40), max_size=30),
)
def test_hash_many_is_hash_of_each(channel: str, addresses: list[str | None]) -> None:
    hasher = AddressHasher(KEY_A)
    assert hasher.hash_many(channel, addresses) == [
        None if a is None else hasher.hash(channel, a) for a in addresses
    ]


def test_hash_many_refuses_an_unknown_channel() -> None:
    with pytest.raises(ValueError, match="unknown channel"):
        AddressHasher(KEY_A).hash_many("fax", ["x"])
