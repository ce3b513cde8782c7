"""The recipient's side: one-click unsubscribe, the preference page's choices, undo and opt-in.

An unsubscribe is durable and effective before the caller answers 2xx: it is a suppress intent
through the one write path (`writes.Writer`: recipient locked, ledger event + suppression + ended
consents, projection rewritten, in one transaction). When PostgreSQL
cannot take it, the verified request is spooled to Redis as an arq job that applies it later with
its original time; when neither store takes it the caller answers 503. Repeats are no-ops.

An undo reverses one unsubscribe made through the same link and gives no consent; a consent from
the page is only ever the person ticking a topic under the tenant's notice, with its version.
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
from suppress.decisions import load_state
from suppress.effects import enqueue_effects
from suppress.errors import Conflict, SuppressError, Unavailable
from suppress.intents import ConsentIntent, SuppressIntent, UndoIntent
from suppress.models import Channel
from suppress.preferences import PageState, build_state
from suppress.replicas import Reads
from suppress.sql import Queries
from suppress.tenants import NoticeText
from suppress.tokens import InvalidToken, TokenClaims, TokenKeyring
from suppress.writes import ConsentOutcome, SuppressOutcome, UndoOutcome, Writer

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
    link: str | None = None  # link_id() of the token it came through

    def job_id(self) -> str:
        """Same recipient and scope → same job: a second click while spooled is a no-op."""
        key = f"{self.tenant_id}:{self.channel}:{self.address_hash.hex()}:{self.topic_id}"
        return "unsubscribe:" + hashlib.sha256(key.encode()).hexdigest()[:32]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What happened: applied now, already in force, or spooled until the database is back."""

    status: Literal["applied", "already", "spooled"]
    event_id: int | None = None


class UndoResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an undo did: reversed an unsubscribe (its scope, the consents restored) or nothing."""

    status: Literal["undone", "nothing"]
    topic_id: int | None = None
    consents_restored: list[int] = msgspec.field(default_factory=list)


class ChoiceRefused(SuppressError):
    """This choice cannot be made on this page; nothing was changed."""

    code = "choice_refused"
    status = 400


class NoticeChanged(Conflict):
    """The consent text changed since the page was shown; nothing was changed. Please look again."""

    code = "notice_changed"


def link_id(claims: TokenClaims) -> str:
    """A stable name for the link a token is (same claims, same link), kept on the unsubscribes made
    through it so that only that link can undo them. Knowing it is no use without the token itself,
    which only the keyring can make."""
    parts = (
        claims.tenant_id,
        claims.channel,
        claims.address_hash.hex(),
        claims.topic_id,
        claims.campaign_id,
        claims.issued_at,
    )
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:32]


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
        "link": order.link,
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
        reads: Reads | None = None,
        *,
        database_wait: float = DATABASE_WAIT,
    ) -> None:
        self._wait = database_wait
        self._pool = pool
        self._reads = reads
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
            link=link_id(claims),
        )
        try:
            event_id = await apply_order(self._pool, self._q, order, wait=self._wait)
        except DATABASE_DOWN as exc:
            log.warning("database unavailable (%s); spooling the unsubscribe", type(exc).__name__)
            return await self._spool(msgspec.structs.replace(order, spooled=True))
        if event_id is None:
            return Outcome(status="already")
        if self._reads is not None:
            try:  # the senders' next checks must deny, even those read from a replica
                await self._reads.note_recipient_write(order.tenant_id)
            except Exception:  # durable already: answer it; replicas catch up within the lag bound
                log.warning("could not record the tenant's write fence")
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

    async def undo(
        self, claims: TokenClaims, *, event_id: int, evidence: Evidence, now: datetime
    ) -> UndoResult:
        """Reverse the unsubscribe `event_id`, made through this very link: the state it replaced comes
        back exactly (its suppression gone, the consents it ended restored) and nothing else. An
        unsubscribe of another link or source, or one already undone or replaced, is left alone."""
        intent = UndoIntent(
            channel=claims.channel,
            address_hash=claims.address_hash,
            undoes=event_id,
            link=link_id(claims),
            occurred_at=now,
            source="unsubscribe_undo",
            actor="recipient",
            data=_evidence_data(evidence),
        )
        with translated_errors("please try again in a minute"):
            applied = await Writer(self._pool, self._q, self._queue).apply(
                claims.tenant_id, [intent], db_timeout=self._wait
            )
        [outcome] = applied.outcomes
        assert isinstance(outcome, UndoOutcome)
        if outcome.event_id is None:
            return UndoResult(status="nothing")
        return UndoResult(
            status="undone", topic_id=outcome.topic_id, consents_restored=outcome.consents_restored
        )

    async def opt_in(
        self,
        claims: TokenClaims,
        *,
        topic_ids: list[int],
        notice: NoticeText,
        lang: str,
        evidence: Evidence,
        now: datetime,
    ) -> list[int]:
        """The person ticked topics they had no basis for, under the tenant's notice shown on the page:
        one consent per topic, own offers only, on the link's channel, with the notice version and the
        page's evidence. Returns the event ids."""
        page_evidence = {
            **_evidence_data(evidence),
            "page": "preferences",
            "language": lang,
            "notice_text": notice.text,
            "link": link_id(claims),
        }
        intents = [
            ConsentIntent(
                channel=claims.channel,
                address_hash=claims.address_hash,
                address=None,
                topic_id=topic_id,
                partners=False,
                source="preference_page",
                notice_version=notice.version,
                evidence=page_evidence,
                granted_at=now,
                actor="recipient",
                data={"via": "unsubscribe_page"},
            )
            for topic_id in topic_ids
        ]
        with translated_errors("please try again in a minute"):
            applied = await Writer(self._pool, self._q, self._queue).apply(
                claims.tenant_id, intents, db_timeout=self._wait
            )
        for outcome in applied.outcomes:
            assert isinstance(outcome, ConsentOutcome)
            if outcome.status == "erased":
                raise Conflict("this address was erased; it cannot be subscribed again from here")
        return applied.event_ids

    async def page_state(self, claims: TokenClaims, now: datetime) -> PageState:
        """What the page shows; degrades to a page without details when the database is down."""
        try:
            async with self._pool.acquire(timeout=self._wait) as conn:
                row = await conn.fetchrow(
                    self._q.recipient_page,
                    claims.tenant_id,
                    claims.channel,
                    claims.address_hash,
                    link_id(claims),
                    timeout=self._wait,
                )
                state = await load_state(conn, self._q, claims.tenant_id, claims.channel, claims.address_hash)
        except DATABASE_DOWN:
            row = None
        if row is None:
            return PageState(available=False, channel=claims.channel)
        return build_state(
            row,
            state,
            channel=claims.channel,
            token_topic_id=claims.topic_id,
            masked_address=mask_address(claims.channel, row["address"]),
            now=now,
        )


def _evidence_data(evidence: Evidence) -> dict[str, Any]:
    return {k: v for k, v in msgspec.to_builtins(evidence).items() if v is not None}
