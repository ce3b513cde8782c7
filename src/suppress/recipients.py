"""Every write that changes what the check decides, and the read that explains a recipient.

Each write appends its ledger event and updates the recipient projection in one statement (or one
transaction for customer events, which touch several addresses), so the next check sees it.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from msgspec import Meta

from suppress import metrics
from suppress.addresses import AddressHasher, normalise
from suppress.effects import enqueue_effects
from suppress.errors import Conflict, Forbidden, InvalidAddress, InvalidInput, NotFound, UnknownTopic
from suppress.intents import (
    ConsentIntent,
    CustomerIntent,
    LiftIntent,
    RuleBroken,
    SuppressIntent,
    check_consent,
    not_in_future,
    suppression_expiry,
)
from suppress.models import (
    ADMIN_ONLY_LIFT,
    AwareDatetime,
    Basis,
    CampaignName,
    Channel,
    CustomerEvent,
    CustomerRef,
    RawAddress,
    Reason,
    ShortText,
    SuppressionReason,
    TopicName,
)
from suppress.policy import MessageContext, RecipientState, active_suppressions, decide
from suppress.queue import Queue
from suppress.sql import Queries
from suppress.tenants import Principal
from suppress.writes import Connection, ConsentOutcome, SuppressOutcome, Writer

SourceName = Annotated[str, Meta(min_length=1, max_length=100)]
NoticeVersion = Annotated[str, Meta(min_length=1, max_length=100)]


class Inbound(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are an error, not silently dropped."""


class TopicIn(Inbound, frozen=True):
    name: TopicName
    soft_opt_in: bool


class Topic(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    soft_opt_in: bool
    created_at: datetime


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


class WriteResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a write did: the ledger event it appended and its visible effect."""

    channel: Channel
    address: str
    event_id: int
    topic: str | None = None
    lifted_unsubscribe: bool = False
    consents_ended: int = 0


class CustomerAddressIn(Inbound, frozen=True):
    channel: Channel
    address: RawAddress
    collected_in_sale: bool


class CustomerEventIn(Inbound, frozen=True):
    customer_ref: CustomerRef
    addresses: Annotated[list[CustomerAddressIn], Meta(min_length=1, max_length=50)]
    event: CustomerEvent
    at: AwareDatetime | None = None


class CustomerResult(msgspec.Struct, frozen=True, kw_only=True):
    customer_ref: str
    event: str
    agreement_open: bool
    last_purchase_at: datetime | None
    addresses: int


class DecisionView(msgspec.Struct, frozen=True, kw_only=True):
    topic: str | None
    allowed: bool
    basis: Basis | None
    reason: Reason | None


class RecipientView(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/recipients/{channel}/{address}: the state and the history that explains it."""

    channel: Channel
    address: str
    known: bool
    marketing: list[DecisionView]
    restricted: bool = False
    erased: bool = False
    active_suppressions: list[str] = msgspec.field(default_factory=list)
    consents: list[dict[str, Any]] = msgspec.field(default_factory=list)
    suppressions: list[dict[str, Any]] = msgspec.field(default_factory=list)
    customers: list[dict[str, Any]] = msgspec.field(default_factory=list)
    events: list[dict[str, Any]] = msgspec.field(default_factory=list)


class Cursor(msgspec.Struct, array_like=True, frozen=True):
    created_at: datetime
    channel: str
    address_hash: bytes
    topic_id: int
    reason: str


class Recipients:
    """The write side of the service, bound to a pool, the queries and the address hasher."""

    def __init__(
        self, pool: asyncpg.Pool, queries: Queries, hasher: AddressHasher, job_queue: Queue | None = None
    ) -> None:
        self._pool = pool
        self._q = queries
        self._hasher = hasher
        self._queue = job_queue
        self.writer = Writer(pool, queries, job_queue)

    # -- shared pieces ---------------------------------------------------------------------

    def key(self, principal: Principal, channel: str, raw: str) -> tuple[str, bytes]:
        """The normalised address and its keyed hash, or InvalidAddress."""
        normalised = normalise(channel, raw, principal.default_region)
        if normalised is None:
            kind = "email address" if channel == "email" else "phone number"
            raise InvalidAddress(f"not a valid {kind}: {raw[:80]!r}")
        return normalised, self._hasher.hash(channel, normalised)

    async def topic_id(self, principal: Principal, name: str | None) -> int:
        """A topic's id (0 for "all topics" when no name is given), or UnknownTopic."""
        if name is None:
            return 0
        row = await self._pool.fetchrow(self._q.topic_by_name, principal.tenant_id, name)
        if row is None:
            raise UnknownTopic(f"no topic named {name!r}; create it with POST /v1/topics")
        return int(row["id"])

    # -- topics ----------------------------------------------------------------------------

    async def save_topic(self, principal: Principal, data: TopicIn) -> tuple[Topic, bool]:
        """Create a topic or change its soft opt-in flag; says whether it was created."""
        row = await self._pool.fetchrow(
            self._q.create_topic, principal.tenant_id, data.name, data.soft_opt_in
        )
        assert row is not None
        return Topic(name=row["name"], soft_opt_in=row["soft_opt_in"], created_at=row["created_at"]), row[
            "created"
        ]

    async def list_topics(self, principal: Principal) -> list[Topic]:
        rows = await self._pool.fetch(self._q.list_topics, principal.tenant_id)
        return [Topic(name=r["name"], soft_opt_in=r["soft_opt_in"], created_at=r["created_at"]) for r in rows]

    # -- suppressions ------------------------------------------------------------------------

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
                what = f"a {reason!r} suppression" if reason else "a suppression"
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
        after: Cursor | None = None
        if cursor:
            try:
                after = msgspec.msgpack.decode(_unb64(cursor), type=Cursor)
            except (ValueError, msgspec.DecodeError):
                raise InvalidInput("cursor is not one this service handed out") from None
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
            next_cursor = _b64(
                msgspec.msgpack.encode(
                    Cursor(
                        last["created_at"],
                        last["channel"],
                        last["address_hash"],
                        last["topic_id"],
                        last["reason"],
                    )
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

    async def campaign_id(self, principal: Principal, name: str | None) -> int | None:
        if name is None:
            return None
        campaign_id: int = await self._pool.fetchval(self._q.resolve_campaign, principal.tenant_id, name)
        return campaign_id

    # -- consents ----------------------------------------------------------------------------

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

    # -- customer relationships ----------------------------------------------------------------

    async def customer_event(
        self, principal: Principal, data: CustomerEventIn, now: datetime
    ) -> CustomerResult:
        """Apply a purchase or agreement event to a customer and every address linked to it."""
        try:
            at = not_in_future(data.at or now, now, "`at`")
        except RuleBroken as exc:
            raise InvalidInput(str(exc)) from None
        linked: dict[tuple[str, bytes], tuple[str, bool]] = {}
        for item in data.addresses:
            normalised, digest = self.key(principal, item.channel, item.address)
            previous = linked.get((item.channel, digest))
            linked[(item.channel, digest)] = (
                normalised,
                item.collected_in_sale or bool(previous and previous[1]),
            )
        intents = [
            CustomerIntent(
                customer_ref=data.customer_ref,
                channel=channel,
                address_hash=digest,
                address=normalised,
                collected_in_sale=collected,
                event=data.event,
                at=at,
                source="api",
                actor=principal.actor,
            )
            for (channel, digest), (normalised, collected) in linked.items()
        ]
        applied = await self.writer.apply(principal.tenant_id, intents)
        metrics.WRITES.labels(f"customer_{data.event}").inc()
        agreement_open, last_purchase_at = applied.customers[data.customer_ref]
        return CustomerResult(
            customer_ref=data.customer_ref,
            event=data.event,
            agreement_open=agreement_open,
            last_purchase_at=last_purchase_at,
            addresses=len(linked),
        )

    # -- reading one recipient -------------------------------------------------------------------

    async def explain(
        self,
        principal: Principal,
        channel: Channel,
        raw_address: str,
        now: datetime,
        *,
        events: int = 1000,
    ) -> RecipientView:
        """A recipient's state, the marketing decision per topic, and the ledger behind it."""
        normalised, digest = self.key(principal, channel, raw_address)
        args = (principal.tenant_id, channel, digest)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(self._q.recipient_state, *args)
            topics = await conn.fetch(self._q.list_topics, principal.tenant_id)
            if row is None:
                details, history = None, []
            else:
                details = await conn.fetchrow(self._q.recipient_details, *args)
                history = await conn.fetch(self._q.recipient_events, *args, events)
        state = None
        if row is not None:
            state = RecipientState(
                row["suppression_reasons"],
                row["suppression_expires"],
                row["unsubscribed_topics"],
                row["consent_topics"],
                row["partner_consent_topics"],
                row["collected_in_sale"],
                row["agreement_open"],
                row["last_purchase_at"],
                row["restricted_at"] is not None,
                row["erased_at"] is not None,
            )
        marketing = []
        for topic_id, topic_name, soft in [(None, None, False)] + [
            (t["id"], t["name"], t["soft_opt_in"]) for t in topics
        ]:
            message = MessageContext(purpose="marketing", topic_id=topic_id, topic_soft_opt_in=soft)
            decision = decide(principal.policy, message, state, now)
            marketing.append(
                DecisionView(
                    topic=topic_name,
                    allowed=decision.allowed,
                    basis=decision.basis,
                    reason=decision.reason,
                )
            )
        return RecipientView(
            channel=channel,
            address=normalised,
            known=row is not None,
            marketing=marketing,
            restricted=bool(state and state.restricted),
            erased=bool(state and state.erased),
            active_suppressions=active_suppressions(state, now) if state else [],
            consents=details["consents"] if details else [],
            suppressions=details["suppressions"] if details else [],
            customers=details["customers"] if details else [],
            events=[
                {
                    "id": e["id"],
                    "kind": e["kind"],
                    "topic": e["topic"],
                    "campaign": e["campaign"],
                    "source": e["source"],
                    "actor": e["actor"],
                    "occurred_at": e["occurred_at"],
                    "recorded_at": e["recorded_at"],
                    "data": e["data"],
                    "personal": e["personal"],
                }
                for e in history
            ],
        )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None
