"""What an import's rows become: the options of an upload, typed records, and our own layouts.

Pure: field values (text, times, booleans) are checked here, row by row; a value that does not fit
raises RowError, which the import reports against the row's line.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, get_args

import msgspec

from suppress.models import CHANNELS, SUPPRESSION_REASONS

ImportKind = Literal["suppressions", "consents", "customers"]
ImportFormat = Literal["csv", "ndjson", "sendgrid", "mailgun", "ses"]
ProviderList = Literal[
    "bounces", "invalid_emails", "spam_reports", "unsubscribes", "group_unsubscribes", "complaints", "blocks"
]
KINDS: tuple[str, ...] = get_args(ImportKind)
FORMATS: tuple[str, ...] = get_args(ImportFormat)
PROVIDER_FORMATS = frozenset({"sendgrid", "mailgun", "ses"})
PROVIDER_LISTS: dict[str, tuple[str, ...]] = {
    "sendgrid": ("bounces", "invalid_emails", "spam_reports", "unsubscribes", "group_unsubscribes"),
    "mailgun": ("bounces", "unsubscribes", "complaints"),
    "ses": (),
}
# A record's text kept for the error report, and the longest free-text field read.
MAX_RAW = 1000
MAX_FIELD = 4096


class FormatError(ValueError):
    """The upload as a whole cannot be read in the chosen format (its header, its shape)."""


class ImportOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What an upload holds and the defaults for fields its rows leave out."""

    kind: ImportKind
    format: ImportFormat
    channel: str = "email"
    reason: str | None = None
    topic: str | None = None
    list: ProviderList | None = None
    source: str | None = None


class SuppressionRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    channel: str
    address: str
    reason: str
    topic: str | None = None
    # Mailgun unsubscribe tags: mapped to topics of the same name, otherwise all topics.
    tags: tuple[str, ...] | None = None
    expires_at: datetime | None = None
    campaign: str | None = None
    note: str | None = None
    at: datetime | None = None
    evidence: dict[str, Any] | None = None


class ConsentRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    channel: str
    address: str
    granted_at: datetime
    topic: str | None = None
    partners: bool = False
    source: str | None = None
    notice_version: str | None = None
    evidence: dict[str, Any] | None = None


class CustomerRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    customer_ref: str
    channel: str
    address: str
    event: str
    at: datetime
    collected_in_sale: bool = False


Record = SuppressionRecord | ConsentRecord | CustomerRecord


class Parsed(msgspec.Struct, frozen=True, gc=False):
    """One record of the upload, or why its text could not be read."""

    line: int
    record: Record | None
    error: str | None
    raw: str


class RowError(ValueError):
    """One record cannot be imported; the message goes to the error report."""


# -- field values --------------------------------------------------------------------------------


def parsetime_field(value: Any) -> datetime:
    """A time from Unix seconds (or milliseconds), ISO 8601 / RFC 3339, or RFC 2822; UTC if no zone."""
    if isinstance(value, bool):
        raise RowError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text) if text and text.replace(".", "", 1).isdigit() else -1.0
        except ValueError:
            number = -1.0
        if number < 0:
            return _parse_timetext_field(text)
    if number > 1e11:  # milliseconds
        number /= 1000
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        raise RowError(f"not a time: {value!r}") from None


def _parse_timetext_field(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            raise RowError(f"not a time: {text[:60]!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "t", "yes", "y", "1"}:
        return True
    if text in {"false", "f", "no", "n", "0"}:
        return False
    raise RowError(f"not true or false: {str(value)[:40]!r}")


def text_field(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        if isinstance(value, bool | int | float):
            value = str(value)
        else:
            raise RowError(f"{name} must be text")
    text: str = value.strip()
    if not text:
        return None
    if len(text) > limit:
        raise RowError(f"{name} is longer than {limit} characters")
    if "\x00" in text:
        raise RowError(f"{name} contains a NUL character")
    return text


def required_field(fields: dict[str, Any], name: str, limit: int) -> str:
    value = text_field(fields.get(name), name, limit)
    if value is None:
        raise RowError(f"{name} is missing")
    return value


def time_field(fields: dict[str, Any], name: str) -> datetime | None:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parsetime_field(value)


def _channel(fields: dict[str, Any], options: ImportOptions) -> str:
    channel = (text_field(fields.get("channel"), "channel", 10) or options.channel).lower()
    if channel not in CHANNELS:
        raise RowError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    return channel


# -- our own layouts ------------------------------------------------------------------------------

# Column (or key) names each kind accepts, each mapped to its field; the first spelling is ours.
OWN_FIELDS: dict[str, dict[str, str]] = {
    "suppressions": {
        **{n: n for n in ("channel", "address", "reason", "topic", "expires_at", "campaign", "note", "at")},
        **{n: "address" for n in ("email", "phone", "recipient")},
        **{n: "at" for n in ("since", "created_at", "suppressed_at", "occurred_at")},
    },
    "consents": {
        **{n: n for n in ("channel", "address", "topic", "partners", "source", "notice_version", "evidence")},
        **{n: "address" for n in ("email", "phone", "recipient")},
        **{n: "granted_at" for n in ("granted_at", "at", "consented_at")},
    },
    "customers": {
        **{n: n for n in ("customer_ref", "channel", "address", "collected_in_sale", "event", "at")},
        **{n: "address" for n in ("email", "phone", "recipient")},
    },
}
CUSTOMER_EVENTS = ("purchase", "agreement_started", "agreement_ended")


def own_record(kind: str, fields: dict[str, Any], options: ImportOptions) -> Record:
    """A record of one of our own layouts (field names already mapped)."""
    if kind == "suppressions":
        reason = (text_field(fields.get("reason"), "reason", 40) or options.reason or "").lower()
        if not reason:
            raise RowError("reason is missing")
        if reason not in SUPPRESSION_REASONS:
            raise RowError(f"reason must be one of {', '.join(SUPPRESSION_REASONS)}, not {reason[:40]!r}")
        return SuppressionRecord(
            channel=_channel(fields, options),
            address=required_field(fields, "address", 512),
            reason=reason,
            topic=text_field(fields.get("topic"), "topic", 100) or options.topic,
            expires_at=time_field(fields, "expires_at"),
            campaign=text_field(fields.get("campaign"), "campaign", 200),
            note=text_field(fields.get("note"), "note", 2000),
            at=time_field(fields, "at"),
        )
    if kind == "consents":
        granted_at = time_field(fields, "granted_at")
        if granted_at is None:
            raise RowError("granted_at is missing: when consent was given is part of its proof")
        evidence = fields.get("evidence")
        if isinstance(evidence, str):
            evidence = _json_object(evidence, "evidence") if evidence.strip() else None
        if evidence is not None and not isinstance(evidence, dict):
            raise RowError("evidence must be a JSON object")
        if evidence and b"\\u0000" in msgspec.json.encode(evidence):  # PostgreSQL's jsonb stores no NUL
            raise RowError("evidence contains a NUL character")
        partners = fields.get("partners")
        return ConsentRecord(
            channel=_channel(fields, options),
            address=required_field(fields, "address", 512),
            granted_at=granted_at,
            topic=text_field(fields.get("topic"), "topic", 100) or options.topic,
            partners=False if partners in (None, "") else parse_bool(partners),
            source=text_field(fields.get("source"), "source", 100) or options.source,
            notice_version=text_field(fields.get("notice_version"), "notice_version", 100),
            evidence=evidence,
        )
    event = required_field(fields, "event", 40).lower()
    if event not in CUSTOMER_EVENTS:
        raise RowError(f"event must be one of {', '.join(CUSTOMER_EVENTS)}, not {event[:40]!r}")
    at = time_field(fields, "at")
    if at is None:
        raise RowError("at is missing: the time of the purchase or agreement change")
    collected = fields.get("collected_in_sale")
    return CustomerRecord(
        customer_ref=required_field(fields, "customer_ref", 200),
        channel=_channel(fields, options),
        address=required_field(fields, "address", 512),
        event=event,
        at=at,
        collected_in_sale=False if collected in (None, "") else parse_bool(collected),
    )


def _json_object(text: str, name: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise RowError(f"{name} is not valid JSON") from None
