"""Consents: recording one with its evidence, and withdrawing one (which is an unsubscribe)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from suppress import metrics
from suppress.errors import Conflict, InvalidInput
from suppress.intents import ConsentIntent, RuleBroken, check_consent, not_in_future
from suppress.models import AwareDatetime, Channel, RawAddress, TopicName
from suppress.suppressions import SuppressionIn, SuppressionWrites
from suppress.tenants import Principal
from suppress.writes import ConsentOutcome
from suppress.writing import Inbound, NoticeVersion, SourceName, WriteResult


class ConsentIn(Inbound, frozen=True):
    channel: Channel
    address: RawAddress
    source: SourceName
    topic: TopicName | None = None
    partners: bool = False
    notice_version: NoticeVersion | None = None
    evidence: dict[str, Any] = msgspec.field(default_factory=dict)
    granted_at: AwareDatetime | None = None


class ConsentWithdrawIn(Inbound, frozen=True):
    channel: Channel
    address: RawAddress
    topic: TopicName | None = None


class ConsentWrites(SuppressionWrites):
    """Giving and withdrawing consent (a withdrawal is a suppression)."""

    async def give_consent(self, principal: Principal, data: ConsentIn, now: datetime) -> WriteResult:
        """Record a consent with its evidence; a consent given after an unsubscribe of the same
        scope lifts it (a person-initiated re-opt-in), and nothing else."""
        normalised, digest = self.key(principal, data.channel, data.address)
        try:
            granted_at = not_in_future(data.granted_at or now, now, "granted_at")
            check_consent(
                notice_version=data.notice_version,
                evidence=data.evidence,
                require_notice_version=principal.require_notice_version,
            )
        except RuleBroken as exc:
            raise InvalidInput(str(exc)) from None
        topic_id = await self.topic_id(principal, data.topic)
        intent = ConsentIntent(
            channel=data.channel,
            address_hash=digest,
            address=normalised,
            topic_id=topic_id,
            partners=data.partners,
            source=data.source,
            notice_version=data.notice_version,
            evidence=data.evidence,
            granted_at=granted_at,
            actor=principal.actor,
            data={"recorded_via": "api"},
        )
        [outcome] = (await self.writer.apply(principal.tenant_id, [intent])).outcomes
        assert isinstance(outcome, ConsentOutcome)
        if outcome.status == "erased":
            raise Conflict(
                f"{normalised} was erased; a consent cannot be recorded until an admin lifts the erasure"
            )
        assert outcome.event_id is not None
        metrics.WRITES.labels("consent_given").inc()
        return WriteResult(
            channel=data.channel,
            address=normalised,
            event_id=outcome.event_id,
            topic=data.topic,
            lifted_unsubscribe=outcome.lift_event_id is not None,
        )

    async def withdraw_consent(
        self, principal: Principal, data: ConsentWithdrawIn, now: datetime
    ) -> WriteResult:
        """A withdrawal is an unsubscribe: it ends the matching consents and suppresses that scope."""
        return await self.suppress(
            principal,
            SuppressionIn(
                channel=data.channel, address=data.address, reason="unsubscribed", topic=data.topic
            ),
            now,
            kind="consent_withdrawn",
        )
