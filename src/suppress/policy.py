"""The decision engine: may this message go to this recipient, on which basis, or why not.

Pure: no I/O, no clock reads (`now` is passed in). Encodes the decision list of POLICY.md, first
match wins:

1. address does not normalise            -> deny invalid_address
2. erased                                -> deny erased (any purpose)
3. restricted (GDPR Art. 18)             -> deny restricted (any purpose)
4. transactional                         -> deny only for the tenant's blocking reasons
                                            (default hard_bounced), else allow basis transactional
5. active global suppression             -> deny with its reason
6. the customer objected (GDPR Art. 21) and no consent given after the objection covers this
   message                               -> deny objected
7. topic given and unsubscribed from it  -> deny unsubscribed
8. consent covering channel + topic (and partner offers when offer = partner) -> allow consent
9. own offer, topic allows soft opt-in, address collected in a sale, relationship active
                                         -> allow customer_relationship
10. otherwise                            -> deny no_basis

A consent is in force while the tenant's consent validity (days after it was given, under the
setting in force now) has not run out, and, when the customer objected, only when given after the
objection (the person's own later consent ends the objection for that consent's scope).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import zip_longest

import msgspec

from suppress.models import REASONS, Basis, Offer, Purpose, Reason

ALL_TOPICS = 0
# When several global suppressions are active, report the strongest "no".
SUPPRESSION_PRIORITY: tuple[Reason, ...] = (
    "complained",
    "hard_bounced",
    "unsubscribed",
    "manual",
    "soft_bounced",
)
_PRIORITY_INDEX: dict[str, int] = {reason: i for i, reason in enumerate(SUPPRESSION_PRIORITY)}


class TenantPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant settings the decision reads."""

    relationship_window_days: int = 365
    soft_opt_in_without_topic: bool = False
    transactional_blocked_by: frozenset[str] = frozenset({"hard_bounced"})
    #: consents lapse this many days after they were given (None: never); applied when deciding
    consent_validity_days: int | None = None


class MessageContext(msgspec.Struct, frozen=True, kw_only=True):
    """What is being sent: purpose, topic (resolved to its id and soft opt-in flag) and offer."""

    purpose: Purpose = "marketing"
    topic_id: int | None = None
    topic_soft_opt_in: bool = False
    offer: Offer = "own"


class RecipientState(msgspec.Struct, frozen=True):
    """One recipient's projection row, as the decision needs it (field order = SQL column order)."""

    suppression_reasons: list[str] = msgspec.field(default_factory=list)
    suppression_expires: list[datetime | None] = msgspec.field(default_factory=list)
    unsubscribed_topics: list[int] = msgspec.field(default_factory=list)
    consent_topics: list[int] = msgspec.field(default_factory=list)
    partner_consent_topics: list[int] = msgspec.field(default_factory=list)
    collected_in_sale: bool = False
    agreement_open: bool = False
    last_purchase_at: datetime | None = None
    restricted: bool = False
    erased: bool = False
    # parallel to consent_topics: when each consent was given (read only when a consent can lapse
    # or the customer objected, so a reader may leave it empty otherwise)
    consent_granted: list[datetime] = msgspec.field(default_factory=list)
    # the latest objection (GDPR Art. 21) of a customer this address is linked to
    objected_at: datetime | None = None


class Decision(msgspec.Struct, frozen=True):
    """Allowed or not, with the legal basis or the reason."""

    allowed: bool
    basis: Basis | None = None
    reason: Reason | None = None


def _deny(reason: Reason) -> Decision:
    return Decision(False, None, reason)


# Decisions are values; sharing one instance per outcome keeps a 100 000-recipient batch cheap.
DENY: dict[str, Decision] = {r: _deny(r) for r in REASONS}
ALLOW_CONSENT = Decision(True, "consent", None)
ALLOW_RELATIONSHIP = Decision(True, "customer_relationship", None)
ALLOW_TRANSACTIONAL = Decision(True, "transactional", None)
NOTHING_KNOWN = RecipientState()


def active_suppressions(state: RecipientState, now: datetime) -> list[str]:
    """The global suppression reasons in force at `now`, strongest first."""
    # zip_longest: a reason without an expiry counts as permanent, so a malformed row fails safe.
    active = [
        reason
        for reason, until in zip_longest(state.suppression_reasons, state.suppression_expires)
        if reason is not None and (until is None or until > now)
    ]
    active.sort(key=lambda r: _PRIORITY_INDEX.get(r, len(_PRIORITY_INDEX)))
    return active


def relationship_active(state: RecipientState, policy: TenantPolicy, now: datetime) -> bool:
    """An agreement is open, or the last purchase lies within the tenant's window."""
    if state.agreement_open:
        return True
    last = state.last_purchase_at
    return last is not None and now - last <= timedelta(days=policy.relationship_window_days)


def _covers(topics: list[int], topic_id: int | None) -> bool:
    if ALL_TOPICS in topics:
        return True
    return topic_id is not None and topic_id in topics


def active_consents(state: RecipientState, policy: TenantPolicy, now: datetime) -> list[int]:
    """The topics (0 = all) of the consents in force at `now`: lapsed ones (by the tenant's validity
    now) and, when the customer objected, ones given before the objection no longer count."""
    validity, objected = policy.consent_validity_days, state.objected_at
    if validity is None and objected is None:
        return state.consent_topics
    # given after this instant (exclusive) = in force; None when nothing bounds it
    lapsed_by = now - timedelta(days=validity) if validity is not None else None
    after = lapsed_by if objected is None else objected if lapsed_by is None else max(lapsed_by, objected)
    # zip_longest: a consent without its time counts as given long ago, so a malformed row fails safe
    return [
        topic
        for topic, granted in zip_longest(state.consent_topics, state.consent_granted)
        if topic is not None and granted is not None and after is not None and granted > after
    ]


def _consented(state: RecipientState, consents: list[int], message: MessageContext) -> bool:
    """A consent in force covers the message's topic (and names partner offers for a partner one)."""
    topic_id = message.topic_id
    return _covers(consents, topic_id) and (
        message.offer == "own"
        or _covers([t for t in state.partner_consent_topics if t in consents], topic_id)
    )


def decide(
    policy: TenantPolicy,
    message: MessageContext,
    state: RecipientState | None,
    now: datetime,
    *,
    address_valid: bool = True,
) -> Decision:
    """Apply POLICY.md's decision list to one recipient; first matching rule wins."""
    if not address_valid:
        return DENY["invalid_address"]
    if state is None:
        state = NOTHING_KNOWN
    if state.erased:
        return DENY["erased"]
    if state.restricted:
        return DENY["restricted"]
    suppressed = active_suppressions(state, now) if state.suppression_reasons else []
    if message.purpose == "transactional":
        for reason in suppressed:
            if reason in policy.transactional_blocked_by:
                return DENY[reason]
        return ALLOW_TRANSACTIONAL
    if suppressed:
        return DENY[suppressed[0]]
    topic_id = message.topic_id
    consents = state.consent_topics
    if consents and (policy.consent_validity_days is not None or state.objected_at is not None):
        consents = active_consents(state, policy, now)
    if state.objected_at is not None and not _consented(state, consents, message):
        return DENY["objected"]
    if topic_id is not None and topic_id in state.unsubscribed_topics:
        return DENY["unsubscribed"]
    if consents and _consented(state, consents, message):
        return ALLOW_CONSENT
    soft_opt_in = message.topic_soft_opt_in if topic_id is not None else policy.soft_opt_in_without_topic
    if (
        message.offer == "own"
        and soft_opt_in
        and state.collected_in_sale
        and relationship_active(state, policy, now)
    ):
        return ALLOW_RELATIONSHIP
    return DENY["no_basis"]
