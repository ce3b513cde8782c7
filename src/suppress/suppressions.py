"""Suppressions: adding one (an unsubscribe, a bounce, a complaint, a manual block), lifting one, and
listing them. Writes are suppress and lift intents through the one write path."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from suppress import cursors, metrics
from suppress.effects import enqueue_effects
from suppress.errors import Forbidden, InvalidInput, NotFound
from suppress.intents import LiftIntent, RuleBroken, SuppressIntent, suppression_expiry
from suppress.models import (
    ADMIN_ONLY_LIFT,
    AwareDatetime,
    CampaignName,
    Channel,
    RawAddress,
    ShortText,
    SuppressionReason,
    TopicName,
)
from suppress.tenants import Principal
from suppress.writes import Connection, SuppressOutcome
from suppress.writing import Inbound, WriteCore, WriteResult


class SuppressionIn(Inbound, frozen=True):
    channel: Channel
    address: RawAddress
    reason: SuppressionReason
    topic: TopicName | None = None
    expires_at: AwareDatetime | None = None
    campaign: CampaignName | None = None
    note: ShortText | None = None


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    channel: Channel
    address: str | None
    reason: str
    topic: str | None
    since: datetime
    expires_at: datetime | None
    campaign: str | None = None
    note: str | None = None
    active: bool = True


class SuppressionPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Suppression]
    next_cursor: str | None


class LiftResult(msgspec.Struct, frozen=True, kw_only=True):
    channel: Channel
    address: str
    topic: str | None
    lifted: list[str]


class Cursor(msgspec.Struct, array_like=True, frozen=True):
    created_at: datetime
    channel: str
    address_hash: bytes
    topic_id: int
    reason: str


class SuppressionWrites(WriteCore):
    """Adding, lifting and listing suppressions."""

    async def suppress(
        self,
        principal: Principal,
        data: SuppressionIn,
        now: datetime,
        *,
        source: str = "api",
        kind: str = "suppression_added",
        extra: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Add a suppression (an `unsubscribed` one also ends the matching consents)."""
        normalised, digest = self.key(principal, data.channel, data.address)
        try:
            expires_at = suppression_expiry(
                data.reason,
                topic_given=data.topic is not None,
                expires_at=data.expires_at,
                at=now,
                now=now,
                soft_bounce_suppress_days=principal.soft_bounce_suppress_days,
            )
        except RuleBroken as exc:
            raise InvalidInput(str(exc)) from None
        topic_id = await self.topic_id(principal, data.topic)
        campaign_id = await self.campaign_id(principal, data.campaign)
        intent = SuppressIntent(
            channel=data.channel,
            address_hash=digest,
            address=normalised,
            topic_id=topic_id,
            reason=data.reason,
            expires_at=expires_at,
            campaign_id=campaign_id,
            note=data.note,
            source=source,
            actor=principal.actor,
            occurred_at=now,
            data=extra or {},
            kind=kind,
        )
        [outcome] = (await self.writer.apply(principal.tenant_id, [intent])).outcomes
        assert isinstance(outcome, SuppressOutcome) and outcome.event_id is not None
        metrics.WRITES.labels(kind).inc()
        return WriteResult(
            channel=data.channel,
            address=normalised,
            event_id=outcome.event_id,
            topic=data.topic,
            consents_ended=len(outcome.consents_ended),
        )

    async def lift(
        self,
        principal: Principal,
        channel: Channel,
        raw_address: str,
        topic: str | None,
        reason: str | None,
        now: datetime,
        *,
        note: str | None = None,
    ) -> LiftResult:
        """Lift the suppressions at one scope (or only `reason`); complaints and erasures need admin."""
        normalised, digest = self.key(principal, channel, raw_address)
        topic_id = await self.topic_id(principal, topic)

        async def lift_at_scope(conn: Connection) -> tuple[list[str], list[int]]:
            rows = await conn.fetch(
                self._q.suppressions_at_scope, principal.tenant_id, channel, digest, topic_id
            )
            reasons = [r["reason"] for r in rows if reason is None or r["reason"] == reason]
            if not reasons:
                what = f"{reason!r} suppression" if reason else "suppression"
                scope = f"topic {topic!r}" if topic else "all topics"
                raise NotFound(f"{normalised} has no {what} on {channel} for {scope}")
            protected = sorted(set(reasons) & ADMIN_ONLY_LIFT)
            if protected and "admin" not in principal.scopes:
                raise Forbidden(f"lifting {', '.join(protected)} needs an API key with the admin scope")
            if "erased" in reasons and not note:
                raise InvalidInput("lifting an erasure needs a reason: pass it as `note`")
            intents = [
                LiftIntent(
                    channel=channel,
                    address_hash=digest,
                    topic_id=topic_id,
                    reason=r,
                    source="api",
                    actor=principal.actor,
                    occurred_at=now,
                    data={"note": note} if note else {},
                )
                for r in reasons
            ]
            applied = await self.writer.apply_in(conn, principal.tenant_id, intents)
            if "erased" in reasons:
                await conn.execute(self._q.clear_erasure, principal.tenant_id, channel, digest)
            return reasons, applied.event_ids

        lifted, event_ids = await self.writer.run(
            principal.tenant_id, {(channel, digest): None}, lift_at_scope
        )
        metrics.WRITES.labels("suppression_lifted").inc(len(lifted))
        await enqueue_effects(self._queue, principal.tenant_id, event_ids)
        return LiftResult(channel=channel, address=normalised, topic=topic, lifted=lifted)

    async def list_suppressions(
        self,
        principal: Principal,
        *,
        channel: str | None,
        reason: str | None,
        since: datetime | None,
        cursor: str | None,
        limit: int,
        now: datetime,
    ) -> SuppressionPage:
        """One page of suppressions, oldest first; pass `next_cursor` back for the next page."""
        after = cursors.decode(cursor, Cursor) if cursor else None
        rows = await self._pool.fetch(
            self._q.list_suppressions,
            principal.tenant_id,
            channel,
            reason,
            since,
            after.created_at if after else None,
            after.channel if after else None,
            after.address_hash if after else None,
            after.topic_id if after else None,
            after.reason if after else None,
            limit + 1,
            now,
        )
        page, more = rows[:limit], len(rows) > limit
        next_cursor = None
        if more and page:
            last = page[-1]
            next_cursor = cursors.encode(
                Cursor(
                    last["created_at"],
                    last["channel"],
                    last["address_hash"],
                    last["topic_id"],
                    last["reason"],
                )
            )
        return SuppressionPage(
            items=[
                Suppression(
                    channel=r["channel"],
                    address=r["address"],
                    reason=r["reason"],
                    topic=r["topic"],
                    since=r["created_at"],
                    expires_at=r["expires_at"],
                    campaign=r["campaign"],
                    note=r["note"],
                    active=r["active"],
                )
                for r in page
            ],
            next_cursor=next_cursor,
        )
