"""The recipient's side: one-click unsubscribe, the preference page's choices, and undo.

An unsubscribe is durable and effective before the caller answers 2xx: it is a suppress intent
through the one write path (`writes.Writer`: recipient locked, ledger event + suppression + ended
consents, projection rewritten, in one transaction). When PostgreSQL
cannot take it, the verified request is spooled to Redis as an arq job that applies it later with
its original time; when neither store takes it the caller answers 503. Repeats are no-ops.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import msgspec

from suppress import queue
from suppress.db import DATABASE_DOWN, translated_errors
from suppress.effects import enqueue_effects
from suppress.errors import Conflict, SuppressError, Unavailable
from suppress.intents import ConsentIntent, SuppressIntent
from suppress.models import Channel
from suppress.policy import RecipientState, active_suppressions
from suppress.sql import Queries
from suppress.tokens import InvalidToken, TokenClaims, TokenKeyring
from suppress.writes import ConsentOutcome, SuppressOutcome, Writer

log = logging.getLogger(__name__)

Source = Literal["one_click", "page"]
# How long one attempt may wait for the database before the request is spooled instead.
DATABASE_WAIT = 5.0
# arq drops a job not started within its expiry (24 h by default): a spooled unsubscribe must
# outlive any database outage we could plausibly have.
SPOOL_LIFETIME = timedelta(days=30)


class BadToken(SuppressError):
    """This unsubscribe link is not valid: it may be incomplete or altered."""

    code = "invalid_token"
    status = 400


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """What we record about the request that carried the unsubscribe."""

    ip: str | None = None
    user_agent: str | None = None


class UnsubscribeOrder(msgspec.Struct, frozen=True, kw_only=True):
    """A verified unsubscribe, self-contained so it can wait in the queue while the database is down."""

    tenant_id: int
    channel: Channel
    address_hash: bytes
    topic_id: int  # 0 = all topics of the channel
    campaign_id: int | None
    source: str
    requested_at: datetime
    token_issued_at: int
    ip: str | None = None
    user_agent: str | None = None
    spooled: bool = False

    def job_id(self) -> str:
        """Same recipient and scope → same job: a second click while spooled is a no-op."""
        key = f"{self.tenant_id}:{self.channel}:{self.address_hash.hex()}:{self.topic_id}"
        return "unsubscribe:" + hashlib.sha256(key.encode()).hexdigest()[:32]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What happened: applied now, already in force, or spooled until the database is back."""

    status: Literal["applied", "already", "spooled"]
    event_id: int | None = None


class TopicChoice(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    unsubscribed: bool


class PageState(msgspec.Struct, frozen=True, kw_only=True):
    """What the unsubscribe page shows (None fields when the database cannot be read)."""

    tenant_name: str | None
    masked_address: str | None
    unsubscribed_all: bool
    topics: list[TopicChoice]
    token_topic: str | None


def mask_address(channel: str, address: str | None) -> str | None:
    """Enough to recognise one's own address, not enough to read it off a shoulder."""
    if not address:
        return None
    if channel == "sms":
        return address[:3] + "•" * max(len(address) - 6, 0) + address[-3:]
    local, _, domain = address.partition("@")
    shown = local[0] + "•••" + (local[-1] if len(local) > 2 else "")
    return f"{shown}@{domain}"


async def apply_order(
    pool: asyncpg.Pool, queries: Queries, order: UnsubscribeOrder, *, wait: float = DATABASE_WAIT
) -> int | None:
    """Write one unsubscribe; returns its event id, or None when it was already in force.
    `wait` bounds each database step (a connection, each statement)."""
    in_force = await pool.fetchval(
        queries.unsubscribe_in_force,
        order.tenant_id,
        order.channel,
        order.address_hash,
        order.topic_id,
        timeout=wait,
    )
    if in_force:  # a repeat: it would write nothing, so it needs no locked transaction
        return None
    data: dict[str, Any] = {
        "token_issued_at": datetime.fromtimestamp(order.token_issued_at, UTC).isoformat(),
        "requested_at": order.requested_at.isoformat(),
        "ip": order.ip,
        "user_agent": order.user_agent,
        "spooled": order.spooled,
    }
    intent = SuppressIntent(
        channel=order.channel,
        address_hash=order.address_hash,
        address=None,  # the token carries no address; the row keeps the one it has
        topic_id=order.topic_id,
        reason="unsubscribed",
        campaign_id=order.campaign_id,
        source=order.source,
        actor="recipient",
        occurred_at=order.requested_at,  # the original time, also when applied late from the spool
        data={k: v for k, v in data.items() if v is not None},
        kind="unsubscribed",
        only_if_new=True,  # repeats write nothing
    )
    applied = await Writer(pool, queries).apply(order.tenant_id, [intent], db_timeout=wait)
    [outcome] = applied.outcomes
    assert isinstance(outcome, SuppressOutcome)
    return outcome.event_id


class Unsubscriber:
    """Verifies tokens and carries out what the recipient asked for."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        keyring: TokenKeyring,
        job_queue: queue.Queue | None,
        *,
        database_wait: float = DATABASE_WAIT,
    ) -> None:
        self._wait = database_wait
        self._pool = pool
        self._q = queries
        self._keyring = keyring
        self._queue = job_queue

    def verify(self, token: str) -> TokenClaims:
        """The token's claims, or BadToken."""
        try:
            return self._keyring.verify(token)
        except InvalidToken:
            raise BadToken() from None

    async def unsubscribe(
        self, claims: TokenClaims, *, topic_id: int, source: Source, evidence: Evidence, now: datetime
    ) -> Outcome:
        """Unsubscribe the token's recipient from one topic (0 = all topics of the channel);
        durable before this returns."""
        order = UnsubscribeOrder(
            tenant_id=claims.tenant_id,
            channel=claims.channel,
            address_hash=claims.address_hash,
            topic_id=topic_id,
            campaign_id=claims.campaign_id,
            source=source,
            requested_at=now,
            token_issued_at=claims.issued_at,
            ip=evidence.ip,
            user_agent=(evidence.user_agent or "")[:500] or None,
        )
        try:
            event_id = await apply_order(self._pool, self._q, order, wait=self._wait)
        except DATABASE_DOWN as exc:
            log.warning("database unavailable (%s); spooling the unsubscribe", type(exc).__name__)
            return await self._spool(msgspec.structs.replace(order, spooled=True))
        if event_id is None:
            return Outcome(status="already")
        await enqueue_effects(self._queue, order.tenant_id, [event_id])
        return Outcome(status="applied", event_id=event_id)

    async def _spool(self, order: UnsubscribeOrder) -> Outcome:
        if self._queue is None:
            raise Unavailable("the unsubscribe could not be stored; please try again in a minute")
        try:
            await queue.enqueue(
                self._queue,
                queue.JOB_APPLY_UNSUBSCRIBE,
                msgspec.to_builtins(order),
                job_id=order.job_id(),
                expires=SPOOL_LIFETIME,
            )
        except Exception as exc:  # Redis down too: nothing holds the request, so no 2xx
            log.error("could not spool an unsubscribe either (%s)", type(exc).__name__)
            raise Unavailable("the unsubscribe could not be stored; please try again in a minute") from None
        return Outcome(status="spooled")

    async def resubscribe(
        self, claims: TokenClaims, *, topic_id: int, source: str, evidence: Evidence, now: datetime
    ) -> list[int]:
        """A person-initiated re-opt-in from the page (undo, or ticking a topic again): a consent
        at that scope, which lifts an unsubscribe of the same scope. Returns the event ids."""
        intent = ConsentIntent(
            channel=claims.channel,
            address_hash=claims.address_hash,
            address=None,
            topic_id=topic_id,
            source=source,
            evidence={k: v for k, v in msgspec.to_builtins(evidence).items() if v is not None},
            granted_at=now,
            actor="recipient",
            data={"via": "unsubscribe_page"},
        )
        with translated_errors("please try again in a minute"):
            applied = await Writer(self._pool, self._q).apply(
                claims.tenant_id, [intent], db_timeout=self._wait
            )
        [outcome] = applied.outcomes
        assert isinstance(outcome, ConsentOutcome)
        if outcome.status == "erased":
            raise Conflict("this address was erased; it cannot be subscribed again from here")
        await enqueue_effects(self._queue, claims.tenant_id, applied.event_ids)
        return applied.event_ids

    async def topic_name(self, claims: TokenClaims) -> str | None:
        """The name of the token's topic (None without one, or when the database cannot say)."""
        if claims.topic_id is None:
            return None
        try:
            name: str | None = await self._pool.fetchval(
                self._q.topic_name, claims.tenant_id, claims.topic_id, timeout=self._wait
            )
        except DATABASE_DOWN:
            return None
        return name

    async def page_state(self, claims: TokenClaims, now: datetime) -> PageState:
        """What the page shows; degrades to a page without details when the database is down."""
        try:
            row = await self._pool.fetchrow(
                self._q.unsubscribe_page,
                claims.tenant_id,
                claims.channel,
                claims.address_hash,
                timeout=self._wait,
            )
        except DATABASE_DOWN:
            row = None
        if row is None:
            return PageState(
                tenant_name=None, masked_address=None, unsubscribed_all=False, topics=[], token_topic=None
            )
        state = RecipientState(
            suppression_reasons=row["suppression_reasons"], suppression_expires=row["suppression_expires"]
        )
        unsubscribed_all = "unsubscribed" in active_suppressions(state, now)
        topics = [
            TopicChoice(
                id=t["id"],
                name=t["name"],
                unsubscribed=unsubscribed_all or t["id"] in row["unsubscribed_topics"],
            )
            for t in row["topics"]
        ]
        token_topic = next((t.name for t in topics if t.id == claims.topic_id), None)
        return PageState(
            tenant_name=row["tenant_name"],
            masked_address=mask_address(claims.channel, row["address"]),
            unsubscribed_all=unsubscribed_all,
            topics=topics,
            token_topic=token_topic,
        )
