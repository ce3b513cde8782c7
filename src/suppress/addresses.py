"""Recipient address normalisation and keyed hashing.

Everything here is pure (no I/O, no clock) and sits on the hot path of the
pre-send check, which may handle up to 100 000 addresses per request.

Email normalisation (:func:`normalise_email`):

* surrounding whitespace is trimmed, the text is put in Unicode NFC and the
  whole address is lower-cased;
* a non-ASCII domain is converted to its IDNA ASCII ("punycode") form using
  UTS #46 mapping (``Bücher.no`` -> ``xn--bcher-kva.no``); an ASCII domain,
  including one already in ``xn--`` form, is kept as is (lower-cased);
* the result must then be a plain ``local@domain`` address: exactly one ``@``;
  a dot-atom local part of 1..64 octets (RFC 5322 ``atext`` plus, for
  SMTPUTF8, non-ASCII letters, marks and digits; quoted local parts are
  rejected); a domain of at least two labels of 1..63 ``[a-z0-9-]`` characters
  not starting or ending with ``-``, a TLD that is not all digits, at most 253
  octets; and at most 254 octets in total.  Lengths are counted in UTF-8 octets.

Pure-ASCII input (the overwhelmingly common case) takes a fast path: one
``lower()`` and one precompiled regular expression, no NFC and no IDNA.

Phone numbers (:func:`normalise_phone`) are normalised to E.164 with
``phonenumbers`` and must be valid numbers.

:class:`AddressHasher` turns a normalised address into the 32-byte
HMAC-SHA256 recipient key that is stored instead of the address itself.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Final

import idna
import phonenumbers

__all__ = [
    "CHANNELS",
    "AddressHasher",
    "normalise",
    "normalise_email",
    "normalise_phone",
]

CHANNELS: Final = frozenset({"email", "sms"})

_MAX_ADDRESS: Final = 254
_MAX_LOCAL: Final = 64
_MAX_DOMAIN: Final = 253
# Generous bound on non-ASCII input before NFC/IDNA: NFD spellings and characters
# that UTS46 maps away can make valid input longer than its 254-octet result.
_MAX_UNICODE_INPUT: Final = 1024

# RFC 5322 atext, lower-case letters only (matching happens after lower()).
_ATEXT: Final = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL_ASCII: Final = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# At least two labels; the last one (TLD) must not be all digits.
_DOMAIN: Final = rf"(?:{_LABEL}\.)+(?![0-9]+\Z){_LABEL}"

# The single hot-path expression: local part length checked by the lookahead,
# total length checked before matching (so the domain is at most 252 octets).
_EMAIL_ASCII_RE: Final = re.compile(rf"(?=[^@]{{1,{_MAX_LOCAL}}}@){_LOCAL_ASCII}@{_DOMAIN}")
_LOCAL_ASCII_RE: Final = re.compile(_LOCAL_ASCII)
_DOMAIN_RE: Final = re.compile(_DOMAIN)

_ATEXT_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-")
# Unicode general categories allowed for non-ASCII local-part characters:
# letters, combining marks (needed by many scripts) and numbers.
_UNICODE_LOCAL_CATEGORIES: Final = frozenset(
    {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No"}
)


def normalise_email(raw: str) -> str | None:
    """Return the canonical form of an email address, or None when it is invalid."""
    s = raw.strip()
    if s.isascii():
        if len(s) > _MAX_ADDRESS:
            return None
        s = s.lower()
        return s if _EMAIL_ASCII_RE.fullmatch(s) is not None else None
    if len(s) > _MAX_UNICODE_INPUT:  # bound the NFC/IDNA work on hostile input
        return None
    return _normalise_email_unicode(s)


def _normalise_email_unicode(s: str) -> str | None:
    """Slow path of :func:`normalise_email` for input containing non-ASCII characters."""
    s = unicodedata.normalize("NFC", s).lower()
    if not unicodedata.is_normalized("NFC", s):  # lower() can un-normalise
        s = unicodedata.normalize("NFC", s)
    if s.count("@") != 1:
        return None
    local, _, domain = s.partition("@")
    if not _valid_local(local):
        return None
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except (UnicodeError, ValueError):  # idna.IDNAError is a UnicodeError
            return None
    if len(domain) > _MAX_DOMAIN or _DOMAIN_RE.fullmatch(domain) is None:
        return None
    address = f"{local}@{domain}"
    if len(address.encode("utf-8")) > _MAX_ADDRESS:
        return None
    return address


def _valid_local(local: str) -> bool:
    """Check a lower-cased, NFC local part: dot-atom of atext or non-ASCII letters."""
    if local.isascii():
        return len(local) <= _MAX_LOCAL and _LOCAL_ASCII_RE.fullmatch(local) is not None
    if not 1 <= len(local.encode("utf-8")) <= _MAX_LOCAL:
        return False
    for atom in local.split("."):
        if not atom:  # leading, trailing or doubled dot
            return False
        for ch in atom:
            if ch in _ATEXT_CHARS:
                continue
            if ch.isascii() or unicodedata.category(ch) not in _UNICODE_LOCAL_CATEGORIES:
                return False
    return True


def normalise_phone(raw: str, default_region: str) -> str | None:
    """Return a valid phone number in E.164 form ('+4791234567'), or None."""
    try:
        region = default_region.upper()
        number = _parse_phone(raw, region)
        if number is None:
            text = raw.strip()
            if text.startswith("00"):  # international prefix outside '00' regions
                number = _parse_phone("+" + text[2:], region)
        if number is None:
            return None
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    except Exception:  # phonenumbers may raise on odd input; never propagate
        return None


def _parse_phone(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    """Parse and validate one spelling of a phone number."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


def normalise(channel: str, raw: str, default_region: str) -> str | None:
    """Normalise an address for a channel ('email' or 'sms'); None if invalid."""
    if channel == "email":
        return normalise_email(raw)
    if channel == "sms":
        return normalise_phone(raw, default_region)
    raise ValueError(f"unknown channel: {channel!r}")


class AddressHasher:
    """Keyed HMAC-SHA256 of normalised addresses, used as the stored recipient key.

    The HMAC inner and outer SHA-256 states are keyed once and copied per call
    (RFC 2104 construction, identical output to ``hmac.new(key, msg, sha256)``),
    which is noticeably faster than copying an ``hmac`` object.
    """

    __slots__ = ("_inner", "_outer")

    _BLOCK: Final = 64  # SHA-256 block size
    MIN_KEY_BYTES: Final = 32

    def __init__(self, key: bytes) -> None:
        """Key the hasher; the key must be at least 32 bytes."""
        if not isinstance(key, bytes | bytearray | memoryview):
            raise TypeError("key must be bytes")
        key = bytes(key)
        if len(key) < self.MIN_KEY_BYTES:
            raise ValueError(f"hash key must be at least {self.MIN_KEY_BYTES} bytes")
        if len(key) > self._BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(self._BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def hash(self, channel: str, normalised: str) -> bytes:
        """Return the 32-byte HMAC-SHA256 of 'channel:normalised'."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel: {channel!r}")
        inner = self._inner.copy()
        inner.update(f"{channel}:{normalised}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hash_many(self, channel: str, normalised: list[str | None]) -> list[bytes | None]:
        """`hash` of each address, None for None (an invalid one); the loop of a check's batch."""
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel: {channel!r}")
        prefix = f"{channel}:"
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        out: list[bytes | None] = []
        add = out.append
        for address in normalised:
            if address is None:
                add(None)
                continue
            inner = inner_copy()
            inner.update((prefix + address).encode())
            outer = outer_copy()
            outer.update(inner.digest())
            add(outer.digest())
        return out

    def __repr__(self) -> str:
        """Never show key material."""
        return "AddressHasher(<key hidden>)"
