"""Tests for suppress.policy: the per-recipient decision list of POLICY.md (first match wins)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suppress.models import SUPPRESSION_REASONS
from suppress.policy import (
    ALL_TOPICS,
    SUPPRESSION_PRIORITY,
    Decision,
    MessageContext,
    RecipientState,
    TenantPolicy,
    active_consents,
    active_suppressions,
    decide,
    relationship_active,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
DEFAULT = TenantPolicy()
MARKETING = MessageContext()
TRANSACTIONAL = MessageContext(purpose="transactional")
TOPIC = 2
OTHER_TOPIC = 3


def marketing(
    topic_id: int | None = TOPIC, *, soft_opt_in: bool = False, offer: str = "own"
) -> MessageContext:
    return MessageContext(
        purpose="marketing",
        topic_id=topic_id,
        topic_soft_opt_in=soft_opt_in,
        offer=offer,  # type: ignore[arg-type]
    )


def suppressed(*reasons: str, expires: datetime | None = None, **kw: Any) -> RecipientState:
    return RecipientState(
        suppression_reasons=list(reasons),
        suppression_expires=[expires] * len(reasons),
        **kw,
    )


def customer(**kw: Any) -> RecipientState:
    """Collected in a sale, agreement open: an active customer relationship."""
    base: dict[str, Any] = {"collected_in_sale": True, "agreement_open": True}
    base.update(kw)
    return RecipientState(**base)


def allowed(basis: str) -> Decision:
    return Decision(True, basis, None)  # type: ignore[arg-type]


def denied(reason: str) -> Decision:
    return Decision(False, None, reason)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rules 1-9


def test_rule1_invalid_address_denies_whatever_else() -> None:
    everything = customer(consent_topics=[ALL_TOPICS], partner_consent_topics=[ALL_TOPICS])
    for message in (marketing(), TRANSACTIONAL, marketing(None)):
        for state in (everything, None, RecipientState(erased=True)):
            assert decide(DEFAULT, message, state, NOW, address_valid=False) == denied("invalid_address")


def test_rule2_erased_denies_any_purpose() -> None:
    state = customer(erased=True, consent_topics=[ALL_TOPICS])
    assert decide(DEFAULT, marketing(), state, NOW) == denied("erased")
    assert decide(DEFAULT, TRANSACTIONAL, state, NOW) == denied("erased")


def test_rule3_restricted_denies_any_purpose() -> None:
    state = customer(restricted=True, consent_topics=[ALL_TOPICS])
    assert decide(DEFAULT, marketing(), state, NOW) == denied("restricted")
    assert decide(DEFAULT, TRANSACTIONAL, state, NOW) == denied("restricted")


def test_rule4_transactional_allowed_with_basis_transactional() -> None:
    assert decide(DEFAULT, TRANSACTIONAL, RecipientState(), NOW) == allowed("transactional")
    assert decide(DEFAULT, TRANSACTIONAL, None, NOW) == allowed("transactional")


def test_rule4_transactional_denied_for_hard_bounced() -> None:
    assert decide(DEFAULT, TRANSACTIONAL, suppressed("hard_bounced"), NOW) == denied("hard_bounced")


@pytest.mark.parametrize("reason", ["unsubscribed", "complained", "manual", "soft_bounced"])
def test_rule4_transactional_allowed_despite_marketing_opt_outs(reason: str) -> None:
    state = suppressed(reason, unsubscribed_topics=[TOPIC])
    assert decide(DEFAULT, TRANSACTIONAL, state, NOW) == allowed("transactional")


def test_rule4_transactional_allowed_with_several_non_blocking_suppressions() -> None:
    state = suppressed("unsubscribed", "complained", "manual")
    assert decide(DEFAULT, TRANSACTIONAL, state, NOW) == allowed("transactional")


def test_rule4_tenant_widens_transactional_blocked_by_complained() -> None:
    policy = TenantPolicy(transactional_blocked_by=frozenset({"hard_bounced", "complained"}))
    assert decide(policy, TRANSACTIONAL, suppressed("complained"), NOW) == denied("complained")
    assert decide(policy, TRANSACTIONAL, suppressed("hard_bounced"), NOW) == denied("hard_bounced")
    assert decide(policy, TRANSACTIONAL, suppressed("unsubscribed"), NOW) == allowed("transactional")
    # Both active: the strongest of the blocking ones is reported.
    both = suppressed("hard_bounced", "complained")
    assert decide(policy, TRANSACTIONAL, both, NOW) == denied("complained")


def test_rule4_transactional_ignores_expired_blocking_suppression() -> None:
    state = suppressed("hard_bounced", expires=NOW - timedelta(seconds=1))
    assert decide(DEFAULT, TRANSACTIONAL, state, NOW) == allowed("transactional")


@pytest.mark.parametrize("reason", list(SUPPRESSION_REASONS))
def test_rule5_active_global_suppression_denies_marketing_with_its_reason(reason: str) -> None:
    state = suppressed(reason, consent_topics=[ALL_TOPICS], collected_in_sale=True)
    assert decide(DEFAULT, marketing(), state, NOW) == denied(reason)
    assert decide(DEFAULT, marketing(None), state, NOW) == denied(reason)


def test_rule5_soft_bounce_denies_until_expiry() -> None:
    state = suppressed("soft_bounced", expires=NOW + timedelta(seconds=1), consent_topics=[ALL_TOPICS])
    assert decide(DEFAULT, marketing(), state, NOW) == denied("soft_bounced")


def test_rule5_expired_soft_bounce_no_longer_denies() -> None:
    state = suppressed("soft_bounced", expires=NOW - timedelta(days=1), consent_topics=[TOPIC])
    assert decide(DEFAULT, marketing(), state, NOW) == allowed("consent")


def test_rule5_expiry_exactly_now_is_expired() -> None:
    state = suppressed("soft_bounced", expires=NOW, consent_topics=[TOPIC])
    assert active_suppressions(state, NOW) == []
    assert decide(DEFAULT, marketing(), state, NOW) == allowed("consent")
    one_microsecond_before = NOW - timedelta(microseconds=1)
    assert decide(DEFAULT, marketing(), state, one_microsecond_before) == denied("soft_bounced")


def test_rule5_several_active_suppressions_report_strongest() -> None:
    state = RecipientState(
        suppression_reasons=[
            "soft_bounced",
            "manual",
            "unsubscribed",
            "hard_bounced",
            "complained",
        ],
        suppression_expires=[NOW + timedelta(days=1), None, None, None, None],
        consent_topics=[ALL_TOPICS],
    )
    assert active_suppressions(state, NOW) == list(SUPPRESSION_PRIORITY)
    assert decide(DEFAULT, marketing(), state, NOW) == denied("complained")
    for i, reason in enumerate(SUPPRESSION_PRIORITY):
        weaker = list(SUPPRESSION_PRIORITY[i:])
        state = suppressed(*reversed(weaker), consent_topics=[ALL_TOPICS])
        assert decide(DEFAULT, marketing(), state, NOW) == denied(reason)


def test_rule5_strongest_active_skips_expired_stronger_one() -> None:
    state = RecipientState(
        suppression_reasons=["complained", "manual"],
        suppression_expires=[NOW - timedelta(days=1), None],
    )
    assert decide(DEFAULT, marketing(), state, NOW) == denied("manual")


def test_rule5_suppression_beats_topic_unsubscribe_and_consent() -> None:
    state = suppressed("manual", unsubscribed_topics=[TOPIC], consent_topics=[TOPIC])
    assert decide(DEFAULT, marketing(), state, NOW) == denied("manual")


def test_rule6_topic_unsubscribe_denies_even_with_consent() -> None:
    state = customer(unsubscribed_topics=[TOPIC], consent_topics=[ALL_TOPICS])
    assert decide(DEFAULT, marketing(TOPIC, soft_opt_in=True), state, NOW) == denied("unsubscribed")


def test_rule6_topic_unsubscribe_only_matters_for_that_topic() -> None:
    state = RecipientState(unsubscribed_topics=[TOPIC], consent_topics=[ALL_TOPICS])
    assert decide(DEFAULT, marketing(OTHER_TOPIC), state, NOW) == allowed("consent")
    assert decide(DEFAULT, marketing(None), state, NOW) == allowed("consent")
    assert decide(DEFAULT, TRANSACTIONAL, state, NOW) == allowed("transactional")


def test_rule7_topic_consent_allows_that_topic() -> None:
    state = RecipientState(consent_topics=[TOPIC])
    assert decide(DEFAULT, marketing(TOPIC), state, NOW) == allowed("consent")


def test_rule7_all_topics_consent_covers_any_topic() -> None:
    state = RecipientState(consent_topics=[ALL_TOPICS])
    for topic in (None, 1, TOPIC, OTHER_TOPIC, 999):
        assert decide(DEFAULT, marketing(topic), state, NOW) == allowed("consent")


def test_rule7_topic_consent_does_not_cover_other_topic_or_no_topic() -> None:
    state = RecipientState(consent_topics=[TOPIC])
    assert decide(DEFAULT, marketing(OTHER_TOPIC), state, NOW) == denied("no_basis")
    assert decide(DEFAULT, marketing(None), state, NOW) == denied("no_basis")


def test_rule7_partner_offer_needs_partner_consent_covering_topic() -> None:
    msg = marketing(TOPIC, offer="partner")
    assert decide(DEFAULT, msg, RecipientState(consent_topics=[TOPIC]), NOW) == denied("no_basis")
    both = RecipientState(consent_topics=[TOPIC], partner_consent_topics=[TOPIC])
    assert decide(DEFAULT, msg, both, NOW) == allowed("consent")
    partner_all = RecipientState(consent_topics=[ALL_TOPICS], partner_consent_topics=[ALL_TOPICS])
    assert decide(DEFAULT, msg, partner_all, NOW) == allowed("consent")
    wrong_topic = RecipientState(consent_topics=[TOPIC], partner_consent_topics=[OTHER_TOPIC])
    assert decide(DEFAULT, msg, wrong_topic, NOW) == denied("no_basis")
    no_topic = RecipientState(consent_topics=[ALL_TOPICS], partner_consent_topics=[TOPIC])
    assert decide(DEFAULT, marketing(None, offer="partner"), no_topic, NOW) == denied("no_basis")


def test_rule7_partner_offer_never_passes_on_relationship() -> None:
    state = customer(last_purchase_at=NOW)
    msg = marketing(TOPIC, soft_opt_in=True, offer="partner")
    assert decide(DEFAULT, msg, state, NOW) == denied("no_basis")
    policy = TenantPolicy(soft_opt_in_without_topic=True)
    assert decide(policy, marketing(None, offer="partner"), state, NOW) == denied("no_basis")
    # Own-offer consent does not stand in for partner consent, relationship or not.
    with_own_consent = customer(consent_topics=[ALL_TOPICS])
    assert decide(DEFAULT, msg, with_own_consent, NOW) == denied("no_basis")


def test_rule8_soft_opt_in_on_open_agreement() -> None:
    state = customer()
    assert decide(DEFAULT, marketing(TOPIC, soft_opt_in=True), state, NOW) == allowed("customer_relationship")


def test_rule8_soft_opt_in_on_recent_purchase() -> None:
    state = RecipientState(collected_in_sale=True, last_purchase_at=NOW - timedelta(days=30))
    assert decide(DEFAULT, marketing(TOPIC, soft_opt_in=True), state, NOW) == allowed("customer_relationship")


def test_rule8_consent_is_preferred_basis_over_relationship() -> None:
    state = customer(consent_topics=[TOPIC])
    assert decide(DEFAULT, marketing(TOPIC, soft_opt_in=True), state, NOW) == allowed("consent")


def test_rule8_relationship_window_boundary() -> None:
    msg = marketing(TOPIC, soft_opt_in=True)
    exactly = RecipientState(collected_in_sale=True, last_purchase_at=NOW - timedelta(days=365))
    assert relationship_active(exactly, DEFAULT, NOW)
    assert decide(DEFAULT, msg, exactly, NOW) == allowed("customer_relationship")
    over = RecipientState(collected_in_sale=True, last_purchase_at=NOW - timedelta(days=365, seconds=1))
    assert not relationship_active(over, DEFAULT, NOW)
    assert decide(DEFAULT, msg, over, NOW) == denied("no_basis")


def test_rule8_tenant_relationship_window() -> None:
    policy = TenantPolicy(relationship_window_days=30)
    msg = marketing(TOPIC, soft_opt_in=True)
    inside = RecipientState(collected_in_sale=True, last_purchase_at=NOW - timedelta(days=30))
    outside = RecipientState(collected_in_sale=True, last_purchase_at=NOW - timedelta(days=30, seconds=1))
    assert decide(policy, msg, inside, NOW) == allowed("customer_relationship")
    assert decide(policy, msg, outside, NOW) == denied("no_basis")


def test_rule8_former_relationship_denied() -> None:
    state = RecipientState(
        collected_in_sale=True, agreement_open=False, last_purchase_at=NOW - timedelta(days=800)
    )
    assert decide(DEFAULT, marketing(TOPIC, soft_opt_in=True), state, NOW) == denied("no_basis")
    never_bought = RecipientState(collected_in_sale=True)
    assert decide(DEFAULT, marketing(TOPIC, soft_opt_in=True), never_bought, NOW) == denied("no_basis")


def test_rule8_address_not_collected_in_sale_denied() -> None:
    state = RecipientState(collected_in_sale=False, agreement_open=True, last_purchase_at=NOW)
    assert decide(DEFAULT, marketing(TOPIC, soft_opt_in=True), state, NOW) == denied("no_basis")


def test_rule8_topic_without_soft_opt_in_denied_on_relationship() -> None:
    state = customer(last_purchase_at=NOW)
    assert decide(DEFAULT, marketing(TOPIC, soft_opt_in=False), state, NOW) == denied("no_basis")


def test_rule8_no_topic_follows_tenant_soft_opt_in_setting() -> None:
    state = customer()
    # The message's soft opt-in flag is irrelevant without a topic.
    msg = marketing(None, soft_opt_in=True)
    assert decide(DEFAULT, msg, state, NOW) == denied("no_basis")
    policy = TenantPolicy(soft_opt_in_without_topic=True)
    assert decide(policy, marketing(None), state, NOW) == allowed("customer_relationship")
    # ... and the tenant setting is irrelevant with a topic.
    assert decide(policy, marketing(TOPIC, soft_opt_in=False), state, NOW) == denied("no_basis")


def test_rule9_no_basis_for_marketing_when_nothing_known() -> None:
    for msg in (marketing(), marketing(None), marketing(TOPIC, soft_opt_in=True, offer="partner")):
        assert decide(DEFAULT, msg, None, NOW) == denied("no_basis")
        assert decide(DEFAULT, msg, RecipientState(), NOW) == denied("no_basis")
    assert decide(DEFAULT, TRANSACTIONAL, None, NOW) == allowed("transactional")


# --------------------------------------------------------------------------- rule order


def test_order_erased_beats_restricted_beats_transactional() -> None:
    both = RecipientState(erased=True, restricted=True)
    assert decide(DEFAULT, TRANSACTIONAL, both, NOW) == denied("erased")
    assert decide(DEFAULT, marketing(), both, NOW) == denied("erased")
    restricted = suppressed("hard_bounced", restricted=True)
    assert decide(DEFAULT, TRANSACTIONAL, restricted, NOW) == denied("restricted")


def test_order_restricted_denies_transactional() -> None:
    assert decide(DEFAULT, TRANSACTIONAL, RecipientState(restricted=True), NOW) == denied("restricted")


def test_order_erased_and_restricted_beat_suppressions_for_marketing() -> None:
    assert decide(DEFAULT, marketing(), suppressed("complained", erased=True), NOW) == denied("erased")
    assert decide(DEFAULT, marketing(), suppressed("complained", restricted=True), NOW) == denied(
        "restricted"
    )


def test_decide_does_not_mutate_state() -> None:
    state = RecipientState(
        suppression_reasons=["soft_bounced", "complained"],
        suppression_expires=[None, None],
    )
    before = msgspec.structs.asdict(state)
    decide(DEFAULT, marketing(), state, NOW)
    assert msgspec.structs.asdict(state) == before


# --------------------------------------------------------------------------- properties

TOPIC_IDS = st.integers(min_value=0, max_value=3)
REAL_TOPIC_IDS = st.integers(min_value=1, max_value=3)
OFFSETS = st.sampled_from(
    [
        timedelta(0),
        timedelta(seconds=1),
        -timedelta(seconds=1),
        timedelta(days=30),
        -timedelta(days=30),
    ]
) | st.timedeltas(min_value=-timedelta(days=3), max_value=timedelta(days=3))
EXPIRIES = st.none() | OFFSETS.map(lambda d: NOW + d)
PURCHASES = (
    st.none()
    | st.sampled_from(
        [
            NOW,
            NOW - timedelta(days=365),
            NOW - timedelta(days=365, seconds=1),
            NOW - timedelta(days=30),
            NOW - timedelta(days=30, seconds=1),
        ]
    )
    | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800)).map(lambda d: NOW - d)
)


# Erased / restricted short-circuit everything; keep them rare so the later rules get exercised.
RARELY = st.sampled_from([False, False, False, False, True])


GIVEN_AGO = st.sampled_from([timedelta(0), timedelta(days=30), timedelta(days=31)]) | st.timedeltas(
    min_value=timedelta(0), max_value=timedelta(days=400)
)


@st.composite
def states(draw: st.DrawFn, *, clean: bool = False) -> RecipientState:
    """A recipient row; `clean` = no suppression rows, not erased, not restricted."""
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(SUPPRESSION_REASONS), EXPIRIES), max_size=0 if clean else 3)
    )
    return RecipientState(
        suppression_reasons=[reason for reason, _ in pairs],
        suppression_expires=[expires for _, expires in pairs],
        unsubscribed_topics=draw(st.lists(REAL_TOPIC_IDS, max_size=2, unique=True)),
        consent_topics=(consents := draw(st.lists(TOPIC_IDS, max_size=3, unique=True))),
        consent_granted=[NOW - draw(GIVEN_AGO) for _ in consents],
        partner_consent_topics=draw(st.lists(TOPIC_IDS, max_size=3, unique=True)),
        collected_in_sale=draw(st.booleans()),
        agreement_open=draw(st.booleans()),
        last_purchase_at=draw(PURCHASES),
        restricted=False if clean else draw(RARELY),
        erased=False if clean else draw(RARELY),
        objected_at=(NOW - draw(GIVEN_AGO)) if draw(RARELY) else None,
    )


POLICIES = st.builds(
    TenantPolicy,
    relationship_window_days=st.sampled_from([0, 1, 30, 365, 730]),
    soft_opt_in_without_topic=st.booleans(),
    transactional_blocked_by=st.frozensets(st.sampled_from(SUPPRESSION_REASONS)),
    consent_validity_days=st.none() | st.sampled_from([1, 30, 365]),
)
MESSAGES = st.builds(
    MessageContext,
    purpose=st.sampled_from(["marketing", "transactional"]),
    topic_id=st.none() | REAL_TOPIC_IDS,
    topic_soft_opt_in=st.booleans(),
    offer=st.sampled_from(["own", "partner"]),
)
MARKETING_MESSAGES = st.builds(
    MessageContext,
    purpose=st.just("marketing"),
    topic_id=st.none() | REAL_TOPIC_IDS,
    topic_soft_opt_in=st.booleans(),
    offer=st.sampled_from(["own", "partner"]),
)
# Half the rows are "clean" so that allowed decisions (both bases) are common enough to test.
STATES = st.none() | states() | states(clean=True)
ACTIVE_EXPIRIES = st.none() | st.timedeltas(
    min_value=timedelta(microseconds=1), max_value=timedelta(days=60)
).map(lambda d: NOW + d)


def _covers(topics: list[int], topic_id: int | None) -> bool:
    return ALL_TOPICS in topics or (topic_id is not None and topic_id in topics)


@given(policy=POLICIES, message=MARKETING_MESSAGES, state=states())
def test_prop_active_global_suppression_never_allows_marketing(
    policy: TenantPolicy, message: MessageContext, state: RecipientState
) -> None:
    decision = decide(policy, message, state, NOW)
    if active_suppressions(state, NOW):
        assert not decision.allowed


@given(policy=POLICIES, message=MESSAGES, state=STATES)
def test_prop_partner_offer_never_on_customer_relationship(
    policy: TenantPolicy, message: MessageContext, state: RecipientState | None
) -> None:
    decision = decide(policy, message, state, NOW)
    if message.offer == "partner":
        assert decision.basis != "customer_relationship"


@given(policy=POLICIES, message=MESSAGES, state=states(), valid=st.booleans())
def test_prop_erased_or_restricted_never_allowed(
    policy: TenantPolicy, message: MessageContext, state: RecipientState, valid: bool
) -> None:
    decision = decide(policy, message, state, NOW, address_valid=valid)
    if state.erased or state.restricted:
        assert not decision.allowed
        if valid:
            assert decision.reason == ("erased" if state.erased else "restricted")


@given(policy=POLICIES, message=MESSAGES, state=STATES, valid=st.booleans())
def test_prop_allowed_has_basis_denied_has_reason(
    policy: TenantPolicy, message: MessageContext, state: RecipientState | None, valid: bool
) -> None:
    decision = decide(policy, message, state, NOW, address_valid=valid)
    if decision.allowed:
        assert decision.basis is not None
        assert decision.reason is None
    else:
        assert decision.reason is not None
        assert decision.basis is None
    if not valid:
        assert decision == denied("invalid_address")


@settings(max_examples=400)
@given(policy=POLICIES, message=MARKETING_MESSAGES, state=STATES)
def test_prop_marketing_basis_is_justified(
    policy: TenantPolicy, message: MessageContext, state: RecipientState | None
) -> None:
    decision = decide(policy, message, state, NOW)
    if not decision.allowed:
        return
    assert state is not None
    assert decision.basis in ("consent", "customer_relationship")
    assert message.topic_id is None or message.topic_id not in state.unsubscribed_topics
    if decision.basis == "consent":
        in_force = active_consents(state, policy, NOW)
        assert _covers(in_force, message.topic_id)
        if message.offer == "partner":
            assert _covers(state.partner_consent_topics, message.topic_id)
    else:
        assert state.objected_at is None
        assert state.collected_in_sale
        assert message.offer == "own"
        assert relationship_active(state, policy, NOW)
        if message.topic_id is None:
            assert policy.soft_opt_in_without_topic
        else:
            assert message.topic_soft_opt_in


@given(policy=POLICIES, message=MESSAGES, state=STATES)
def test_prop_transactional_never_no_basis(
    policy: TenantPolicy, message: MessageContext, state: RecipientState | None
) -> None:
    transactional = msgspec.structs.replace(message, purpose="transactional")
    decision = decide(policy, transactional, state, NOW)
    assert decision.reason != "no_basis"
    assert decision.basis in (None, "transactional")
    if not decision.allowed:
        assert state is not None
        assert (
            decision.reason in ("erased", "restricted") or decision.reason in policy.transactional_blocked_by
        )


@given(policy=POLICIES, message=MESSAGES, state=STATES, valid=st.booleans())
def test_prop_decide_is_deterministic(
    policy: TenantPolicy, message: MessageContext, state: RecipientState | None, valid: bool
) -> None:
    first = decide(policy, message, state, NOW, address_valid=valid)
    # Equal but distinct copies of the inputs give the same answer.
    policy_copy = msgspec.structs.replace(policy)
    message_copy = msgspec.structs.replace(message)
    state_copy = None if state is None else msgspec.convert(msgspec.to_builtins(state), RecipientState)
    second = decide(policy_copy, message_copy, state_copy, NOW, address_valid=valid)
    assert first == second
    assert decide(policy, message, state, NOW, address_valid=valid) == first


@settings(max_examples=400)
@given(
    policy=POLICIES,
    message=MARKETING_MESSAGES,
    state=STATES,
    reason=st.sampled_from(SUPPRESSION_REASONS),
    expires=ACTIVE_EXPIRIES,
)
def test_prop_adding_active_suppression_never_allows_denied_marketing(
    policy: TenantPolicy,
    message: MessageContext,
    state: RecipientState | None,
    reason: str,
    expires: datetime | None,
) -> None:
    base = state or RecipientState()
    before = decide(policy, message, base, NOW)
    more = msgspec.structs.replace(
        base,
        suppression_reasons=[*base.suppression_reasons, reason],
        suppression_expires=[*base.suppression_expires, expires],
    )
    after = decide(policy, message, more, NOW)
    assert not after.allowed
    if not before.allowed:
        assert not after.allowed


@settings(max_examples=400)
@given(
    policy=POLICIES,
    message=MESSAGES,
    state=STATES,
    topic=TOPIC_IDS,
    partner=st.booleans(),
)
def test_prop_adding_consent_never_denies_allowed(
    policy: TenantPolicy,
    message: MessageContext,
    state: RecipientState | None,
    topic: int,
    partner: bool,
) -> None:
    base = state or RecipientState()
    before = decide(policy, message, base, NOW)
    if partner:
        more = msgspec.structs.replace(base, partner_consent_topics=[*base.partner_consent_topics, topic])
    else:
        more = msgspec.structs.replace(base, consent_topics=[*base.consent_topics, topic])
    after = decide(policy, message, more, NOW)
    if before.allowed:
        assert after.allowed


# -- consent validity (applied when deciding) and objection ------------------------------------------


def consented(ago: timedelta, topics: list[int] | None = None, **kw: Any) -> RecipientState:
    topics = [ALL_TOPICS] if topics is None else topics
    return RecipientState(consent_topics=topics, consent_granted=[NOW - ago] * len(topics), **kw)


def test_validity_lapses_a_consent_that_many_days_after_it_was_given() -> None:
    policy = TenantPolicy(consent_validity_days=30)
    assert decide(policy, marketing(), consented(timedelta(days=30) - timedelta(microseconds=1)), NOW) == (
        allowed("consent")
    )
    assert decide(policy, marketing(), consented(timedelta(days=30)), NOW) == denied("no_basis")
    # the setting in force now decides, whenever the consent was given
    assert decide(TenantPolicy(), marketing(), consented(timedelta(days=3000)), NOW) == allowed("consent")
    assert decide(
        TenantPolicy(consent_validity_days=3001), marketing(), consented(timedelta(days=3000)), NOW
    ) == (allowed("consent"))


def test_a_lapsed_consent_falls_through_to_the_relationship() -> None:
    state = consented(timedelta(days=40), collected_in_sale=True, agreement_open=True)
    policy = TenantPolicy(consent_validity_days=30)
    assert decide(policy, marketing(soft_opt_in=True), state, NOW) == allowed("customer_relationship")


def test_a_consent_without_its_time_counts_as_lapsed_when_one_can_lapse() -> None:
    state = RecipientState(consent_topics=[ALL_TOPICS])  # a malformed row fails safe
    assert decide(TenantPolicy(consent_validity_days=30), marketing(), state, NOW) == denied("no_basis")
    assert decide(DEFAULT, marketing(), state, NOW) == allowed("consent")


def test_objection_denies_every_marketing_message_but_not_transactional() -> None:
    state = consented(timedelta(days=2), objected_at=NOW - timedelta(days=1), collected_in_sale=True,
                      agreement_open=True, partner_consent_topics=[ALL_TOPICS])  # fmt: skip
    for message in (marketing(), marketing(None), marketing(soft_opt_in=True), marketing(offer="partner")):
        assert decide(DEFAULT, message, state, NOW) == denied("objected")
    assert decide(DEFAULT, TRANSACTIONAL, state, NOW) == allowed("transactional")


def test_a_consent_given_after_the_objection_ends_it_for_its_scope() -> None:
    state = consented(timedelta(days=1), [TOPIC], objected_at=NOW - timedelta(days=2))
    assert decide(DEFAULT, marketing(TOPIC), state, NOW) == allowed("consent")
    assert decide(DEFAULT, marketing(OTHER_TOPIC), state, NOW) == denied("objected")
    assert decide(DEFAULT, marketing(TOPIC, offer="partner"), state, NOW) == denied("objected")
    at_the_same_time = consented(timedelta(days=2), [TOPIC], objected_at=NOW - timedelta(days=2))
    assert decide(DEFAULT, marketing(TOPIC), at_the_same_time, NOW) == denied("objected")
    lapsed = consented(timedelta(days=1), [TOPIC], objected_at=NOW - timedelta(days=2))
    assert decide(TenantPolicy(consent_validity_days=1), marketing(TOPIC), lapsed, NOW) == denied("objected")


def test_order_suppression_beats_objection_beats_topic_unsubscribe() -> None:
    objected = NOW - timedelta(days=1)
    assert decide(DEFAULT, marketing(), suppressed("complained", objected_at=objected), NOW) == denied(
        "complained"
    )
    state = RecipientState(unsubscribed_topics=[TOPIC], objected_at=objected)
    assert decide(DEFAULT, marketing(TOPIC), state, NOW) == denied("objected")
