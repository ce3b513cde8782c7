"""What a write asks for, as typed intents, and the rules every intent must keep.

Every write of the service — API single writes, the unsubscribe page and one-click, SMS keywords,
provider events, imports, GDPR rights — is a list of these intents, applied by `writes.Writer`.
The rules live here once, as pure functions (no I/O, time passed in): the API turns a broken rule
into a 422 problem, an import into an error row with its line number.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec

#: A time "in the future" is a clock or data error; allow a little skew.
CLOCK_SKEW = timedelta(minutes=5)
MAX_EVIDENCE_BYTES = 16_384
#: Opt-outs and complaints stand until lifted (POLICY.md); so do erasure and restriction.
NEVER_LAPSE: frozenset[str] = frozenset({"unsubscribed", "complained", "erased", "restricted"})

_encode = msgspec.json.encode


class RuleBroken(ValueError):
    """An intent breaks one of the write rules; the message says which, in words."""


class SuppressIntent(msgspec.Struct, frozen=True, kw_only=True):
    """Suppress one recipient at one scope (topic_id 0 = every topic of the channel)."""

    channel: str
    address_hash: bytes
    address: str | None
    topic_id: int
    reason: str
    occurred_at: datetime
    source: str
    actor: str | None
    expires_at: datetime | None = None
    campaign_id: int | None = None
    note: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    kind: str = "suppression_added"
    #: write nothing when the same reason is already in force at this scope or for every topic
    only_if_new: bool = False


class LiftIntent(msgspec.Struct, frozen=True, kw_only=True):
    """Lift one suppression (one reason at one scope)."""

    channel: str
    address_hash: bytes
    topic_id: int
    reason: str
    occurred_at: datetime
    source: str
    actor: str | None
    #: lift only when the suppression's expiry has passed by then (None: regardless)
    expired_by: datetime | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class ConsentIntent(msgspec.Struct, frozen=True, kw_only=True):
    """Record a consent with its evidence (a later consent lifts an unsubscribe of its scope)."""

    channel: str
    address_hash: bytes
    address: str | None
    topic_id: int
    granted_at: datetime
    source: str
    actor: str | None
    partners: bool = False
    notice_version: str | None = None
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    #: write nothing when the same consent is already recorded
    only_if_new: bool = False


class UndoIntent(msgspec.Struct, frozen=True, kw_only=True):
    """Reverse one unsubscribe the recipient made through a link ("I clicked by mistake"): the state
    that unsubscribe replaced comes back exactly, and nothing else (no consent is given)."""

    channel: str
    address_hash: bytes
    #: the event id of the unsubscribe to reverse
    undoes: int
    #: the link it must have been made through (`unsubscribe.link_id`)
    link: str
    occurred_at: datetime
    source: str
    actor: str | None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class CustomerIntent(msgspec.Struct, frozen=True, kw_only=True):
    """A purchase or agreement event of a customer, linking one of its addresses."""

    customer_ref: str
    channel: str
    address_hash: bytes
    address: str | None
    collected_in_sale: bool
    event: str
    at: datetime
    source: str
    actor: str | None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    #: leave out a link that changes nothing (known link, customer already past this time)
    only_if_new: bool = False


class SoftBounceIntent(msgspec.Struct, frozen=True, kw_only=True):
    """One soft bounce: counted once per message; at the tenant's threshold within its window it
    becomes a `soft_bounced` suppression until `suppress_days` after the latest bounce."""

    channel: str
    address_hash: bytes
    address: str | None
    observation_key: str
    observed_at: datetime
    provider_event_id: int | None
    source: str
    actor: str | None
    now: datetime
    campaign_id: int | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    #: re-check the threshold even when this bounce was counted before (a retried event)
    recheck: bool = False


class ObjectionIntent(msgspec.Struct, frozen=True, kw_only=True):
    """A customer's objection to direct marketing (GDPR Art. 21), or an admin's lift of it.

    A fact about the customer, not about one address: it covers every address linked to the
    customer, before or after it, on every channel and topic (`Writer.object_customer`). Only an
    admin's lift with a note (`objected=False`) or the person's own later consent, for that
    consent's scope (policy.decide), ends it.
    """

    customer_ref: str
    objected: bool
    at: datetime
    source: str
    actor: str | None
    note: str | None = None


Intent = SuppressIntent | LiftIntent | UndoIntent | ConsentIntent | CustomerIntent | SoftBounceIntent


def recipient_key(intent: Intent) -> tuple[str, bytes]:
    """The recipient an intent writes to: intents of one recipient apply in order, one at a time."""
    return intent.channel, intent.address_hash


# -- the rules --------------------------------------------------------------------------------------


def suppression_expiry(
    reason: str,
    *,
    topic_given: bool,
    expires_at: datetime | None,
    at: datetime,
    now: datetime,
    soft_bounce_suppress_days: int,
) -> datetime | None:
    """The expiry a suppression gets, or RuleBroken. A soft bounce without one runs for the tenant's
    period from `at`; RuleBroken too when that period is already over (nothing left to suppress)."""
    if topic_given and reason != "unsubscribed":
        raise RuleBroken("only `unsubscribed` can be limited to a topic; leave out `topic` for other reasons")
    if expires_at is not None:
        if reason in NEVER_LAPSE:
            raise RuleBroken(
                f"a `{reason}` suppression never expires (opt-outs, complaints, erasures and "
                "restrictions stand until lifted); leave out expires_at"
            )
        if expires_at <= now:
            raise RuleBroken("expires_at must lie in the future")
        return expires_at
    if reason == "soft_bounced":
        return at + timedelta(days=soft_bounce_suppress_days)
    return None


def not_in_future(at: datetime, now: datetime, name: str) -> datetime:
    """`at` unless it lies ahead of `now` by more than the clock skew allowed."""
    if at > now + CLOCK_SKEW:
        raise RuleBroken(f"{name} lies in the future ({at.isoformat()})")
    return at


def check_consent(
    *, notice_version: str | None, evidence: dict[str, Any] | None, require_notice_version: bool
) -> None:
    """The consent-quality rules: a notice version where the tenant requires one, bounded evidence."""
    if require_notice_version and not notice_version:
        raise RuleBroken("this tenant requires notice_version on every consent (what the person was told)")
    if evidence and len(_encode(evidence)) > MAX_EVIDENCE_BYTES:
        raise RuleBroken(f"evidence is larger than {MAX_EVIDENCE_BYTES} bytes as JSON")


def check_objection(intent: ObjectionIntent) -> None:
    """Lifting an objection is an admin's deliberate act: it needs a note saying why."""
    if not intent.objected and not (intent.note and intent.note.strip()):
        raise RuleBroken("lifting an objection needs a note saying why (e.g. the person's written request)")
