"""What the recipient's page shows: per topic, whether a message on it would be allowed to this
person now, on which basis or why not, in the tenant's own words for the topic.

The answer per topic comes from the decision engine (`policy.decide`) over the same decision input
the pre-send check reads (`suppress.decisions`), through one function, `topic_decisions`: the page
can never tick a topic a check would deny.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from suppress.decisions import tenant_policy
from suppress.models import Basis, Channel, Reason
from suppress.policy import (
    ALL_TOPICS,
    Decision,
    MessageContext,
    RecipientState,
    TenantPolicy,
    active_suppressions,
    decide,
)
from suppress.tenants import ConsentNotice
from suppress.topics import TopicDisplay

Language = Literal["nb", "en"]
LANGUAGES: tuple[Language, ...] = ("nb", "en")


class PageTopic(msgspec.Struct, frozen=True, kw_only=True):
    """One topic as the page shows it to this recipient."""

    id: int
    name: str
    display: TopicDisplay
    allowed: bool
    basis: Basis | None
    reason: Reason | None
    #: when the consent behind `basis = consent` was given, or when the topic was unsubscribed
    since: datetime | None = None
    #: a consent under the tenant's notice would make it allowed (and the tenant has a notice)
    can_opt_in: bool = False

    def label(self, lang: Language) -> str:
        texts = getattr(self.display, lang) or self.display.nb or self.display.en
        return texts.label if texts else self.name

    def description(self, lang: Language) -> str:
        texts = getattr(self.display, lang) or self.display.nb or self.display.en
        return texts.description if texts else ""


class Reversible(msgspec.Struct, frozen=True, kw_only=True):
    """The latest unsubscribe made through this link that an undo can still reverse."""

    event_id: int
    topic_id: int  # 0 = all topics


class PageState(msgspec.Struct, frozen=True, kw_only=True):
    """What the page shows; `available` is False when the database could not be read."""

    available: bool
    channel: Channel
    sender: str | None = None
    masked_address: str | None = None
    #: the global suppression, erasure or restriction in force: no topic can be received
    blocked: str | None = None
    topics: list[PageTopic] = msgspec.field(default_factory=list)
    token_topic_id: int | None = None
    undo: Reversible | None = None
    notice: ConsentNotice | None = None

    @property
    def token_topic(self) -> PageTopic | None:
        return next((t for t in self.topics if t.id == self.token_topic_id), None)

    def topic(self, topic_id: int) -> PageTopic | None:
        return next((t for t in self.topics if t.id == topic_id), None)


def topic_decisions(
    policy: TenantPolicy, topics: list[tuple[int, bool]], state: RecipientState | None, now: datetime
) -> list[Decision]:
    """Would a marketing message (own offer) on each topic (id, soft opt-in) be allowed to this
    recipient now? The decision engine's answer, nothing of the page's own."""
    return [
        decide(
            policy, MessageContext(purpose="marketing", topic_id=topic_id, topic_soft_opt_in=soft), state, now
        )
        for topic_id, soft in topics
    ]


def _times(raw: dict[str, str] | None) -> dict[int, datetime]:
    return {int(k): datetime.fromisoformat(v) for k, v in (raw or {}).items()}


def build_state(
    row: Any,
    state: RecipientState | None,
    *,
    channel: Channel,
    token_topic_id: int | None,
    masked_address: str | None,
    now: datetime,
) -> PageState:
    """The page's view of one recipient from the tenant/detail row and the decision state."""
    notice = None if row["consent_notice"] is None else msgspec.convert(row["consent_notice"], ConsentNotice)
    raw_topics = row["topics"] or []
    decisions = topic_decisions(
        tenant_policy(row), [(t["id"], t["soft_opt_in"]) for t in raw_topics], state, now
    )
    blocked = None
    if state is not None:
        suppressed = active_suppressions(state, now)
        blocked = (
            "erased"
            if state.erased
            else "restricted"
            if state.restricted
            else (suppressed[0] if suppressed else None)
        )
    consented, unsubscribed = _times(row["consented"]), _times(row["unsubscribed"])
    topics = []
    for raw, decision in zip(raw_topics, decisions, strict=True):
        topic_id = raw["id"]
        since = None
        if decision.basis == "consent":
            since = consented.get(topic_id) or consented.get(ALL_TOPICS)
        elif decision.reason == "unsubscribed":
            since = unsubscribed.get(topic_id)
        # a topic consent helps only where nothing stronger than "no basis" or this topic's own
        # unsubscribe stands in the way (a consent lifts an unsubscribe of its own scope)
        can_opt_in = (
            notice is not None
            and blocked is None
            and not decision.allowed
            and decision.reason in ("no_basis", "unsubscribed")
        )
        topics.append(
            PageTopic(
                id=topic_id,
                name=raw["name"],
                display=msgspec.convert(raw["display"] or {}, TopicDisplay),
                allowed=decision.allowed,
                basis=decision.basis,
                reason=decision.reason,
                since=since,
                can_opt_in=can_opt_in,
            )
        )
    undo = None if row["undo"] is None else msgspec.convert(row["undo"], Reversible)
    return PageState(
        available=True,
        channel=channel,
        sender=row["display_name"] or row["name"],
        masked_address=masked_address,
        blocked=blocked,
        topics=topics,
        token_topic_id=token_topic_id,
        undo=undo,
        notice=notice,
    )
