"""The pre-send check: for each recipient, allowed or not, on which basis or why, plus the link.

Hot path: normalise and hash every address, fetch the state of the batch with array parameters,
decide each recipient with the pure policy, mint a token for every allowed marketing recipient,
and add the batch's outcome counts to this process's pending day counters (no write: they are
flushed in bulk every second, check_counts.py).

How it stays fast for 100 000 recipients on a small machine (measured by bench/check.py, see
docs/performance.md):

- every distinct hash of the request goes to PostgreSQL in **one** `= ANY($3)` statement, so the
  planner sees the whole batch (key-ordered index probes, or one scan when the batch is a large
  part of the table) instead of planning and probing chunk by chunk;
- a large answer is read through a cursor STREAM_ROWS rows at a time, and a row's recipients are
  decided as soon as it arrives, while PostgreSQL produces the next slice; recipients without a row
  (never seen, or invalid) are answered at the end from decisions made once per batch;
- the topic and campaign are resolved while the addresses are hashed and looked up; a mid-sized
  request (SPLIT_FROM up to STREAM_FROM recipients) is looked up in two halves on two connections,
  the first while the second is hashed;
- the per-recipient loops run with the cyclic garbage collector held off (they are synchronous, so
  nothing else runs meanwhile, and what they allocate holds no cycles); left on, it re-traverses
  the growing batch again and again;
- results are `gc=False` structs, so 100 000 of them are never traversed by the collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, cast

import asyncpg
import msgspec
from msgspec import Meta

from suppress import metrics
from suppress.addresses import AddressHasher, normalise
from suppress.check_counts import CheckCounts
from suppress.check_counts import outcome as _outcome
from suppress.decisions import state_of
from suppress.errors import BatchTooLarge, InvalidInput, UnknownTopic
from suppress.models import Basis, CampaignName, Channel, Offer, Purpose, Reason, TopicName
from suppress.policy import DENY, Decision, MessageContext, decide
from suppress.replicas import REPLICA_FAILURES, Reads, Route
from suppress.sql import Queries
from suppress.tenants import Principal
from suppress.tokens import TokenClaims, TokenKeyring

MAX_RECIPIENTS = 100_000
# A lookup of at least this many distinct addresses is read back through a cursor, STREAM_ROWS
# rows at a time, so deciding overlaps with PostgreSQL producing the rest; a smaller one in one go.
STREAM_FROM = 5_000
STREAM_ROWS = 5_000
# A request of SPLIT_FROM..STREAM_FROM recipients is looked up in two halves on two connections.
SPLIT_FROM = 200
ONE_CLICK = "List-Unsubscribe=One-Click"
# A check's topic (id, soft opt-in) and campaign id are remembered this long per process, sparing
# a one-recipient check a query: a topic's soft opt-in changed through another process is seen
# within this time (through this one, at once: POST /v1/topics forgets the tenant's entries).
CONTEXT_TTL = 5.0

CheckRecipient = Annotated[str, Meta(max_length=512)]


class CheckRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/checks body."""

    channel: Channel
    purpose: Purpose
    recipients: list[CheckRecipient]
    topic: TopicName | None = None
    offer: Offer = "own"
    campaign: CampaignName | None = None


class CheckResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The decision for one recipient, in the order of the request (strings only: never in a cycle)."""

    recipient: str
    allowed: bool
    basis: Basis | None
    reason: Reason | None
    unsubscribe_url: str | None = None
    list_unsubscribe: str | None = None
    list_unsubscribe_post: str | None = None


class CheckSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Counts over the batch."""

    allowed: int
    denied: int
    reasons: dict[str, int]
    bases: dict[str, int]


class CheckResponse(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/checks answer."""

    results: list[CheckResult]
    summary: CheckSummary


class CheckService:
    """Everything a check needs that lives longer than one request."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        hasher: AddressHasher,
        keyring: TokenKeyring,
        public_url: str,
        counts: CheckCounts,
        reads: Reads | None = None,
    ) -> None:
        self._pool = pool
        self._reads = reads or Reads(pool)
        self._counts = counts
        # (tenant, topic name, campaign name) -> (good until, (topic id, soft opt-in, campaign id))
        self._contexts: dict[
            tuple[int, str | None, str | None], tuple[float, tuple[int | None, bool, int | None]]
        ] = {}
        self._queries = queries
        self._hasher = hasher
        self._keyring = keyring
        self._unsubscribe_base = public_url.rstrip("/") + "/u/"

    async def check(self, principal: Principal, request: CheckRequest, now: datetime) -> CheckResponse:
        """Decide every recipient of one request."""
        count = len(request.recipients)
        if count == 0:
            raise InvalidInput("recipients must hold at least one address")
        if count > MAX_RECIPIENTS:
            raise BatchTooLarge(
                f"{count} recipients in one request; at most {MAX_RECIPIENTS} (split the list)"
            )
        with metrics.CHECK_SECONDS.time():
            # The topic and campaign are looked up (unless known from an earlier check) while the
            # addresses are hashed and looked up.
            context = self._context(principal, request)
            try:
                if not context.done():
                    await asyncio.sleep(0)  # its query goes out now
                batch = _Batch(self, principal, request, now)
                route = await self._reads.route(principal)
                await self._decide_batch(principal, request, batch, context, route)
            finally:
                with contextlib.suppress(Exception):
                    await context  # when the batch failed first: let it end, and see its error
            results, outcomes = batch.done, batch.ordered_outcomes()
            self._count(principal, request.channel, batch.campaign_id, outcomes, now)
        return _response(results, outcomes, request)

    def _context(
        self, principal: Principal, request: CheckRequest
    ) -> asyncio.Future[tuple[int | None, bool, int | None]]:
        """The message's (topic id, topic soft opt-in, campaign id): known, or being looked up."""
        known: asyncio.Future[tuple[int | None, bool, int | None]]
        if request.topic is None and request.campaign is None:
            known = asyncio.get_running_loop().create_future()
            known.set_result((None, False, None))
            return known
        key = (principal.tenant_id, request.topic, request.campaign)
        cached = self._contexts.get(key)
        if cached is not None and cached[0] > time.monotonic():
            known = asyncio.get_running_loop().create_future()
            known.set_result(cached[1])
            return known
        return asyncio.ensure_future(self._resolve_context(principal, request))

    async def _resolve_context(
        self, principal: Principal, request: CheckRequest
    ) -> tuple[int | None, bool, int | None]:
        row = await self._pool.fetchrow(
            self._queries.resolve_check_context,
            principal.tenant_id,
            request.topic,
            request.campaign,
        )
        assert row is not None
        if request.topic is not None and row["topic_id"] is None:
            raise UnknownTopic(f"no topic named {request.topic!r}; create it with POST /v1/topics")
        resolved = (row["topic_id"], bool(row["topic_soft_opt_in"]), row["campaign_id"])
        if len(self._contexts) > 10_000:
            self._contexts.clear()
        self._contexts[(principal.tenant_id, request.topic, request.campaign)] = (
            time.monotonic() + CONTEXT_TTL,
            resolved,
        )
        return resolved

    def forget_tenant(self, tenant_id: int) -> None:
        """Drop the tenant's remembered topics and campaigns (a topic of it changed)."""
        self._contexts = {k: v for k, v in self._contexts.items() if k[0] != tenant_id}

    async def _decide_batch(
        self,
        principal: Principal,
        request: CheckRequest,
        batch: _Batch,
        context: asyncio.Future[tuple[int | None, bool, int | None]],
        route: Route,
    ) -> None:
        """Hash every address, look the distinct hashes up, and decide each row as it arrives.

        One statement for the whole request lets PostgreSQL plan for all of it (key-ordered index
        probes, or one scan when the batch is a large part of the table) instead of once per chunk.
        A large answer is read through a cursor a slice at a time: while this process decides one
        slice, PostgreSQL produces the next. A mid-sized request is looked up in two halves on two
        connections instead, the first while this process hashes the second.
        """
        hasher, region, n = self._hasher, principal.default_region, len(request.recipients)
        tenant_id, channel = principal.tenant_id, request.channel
        pending: list[asyncio.Future[list[asyncpg.Record]]] = []  # lookups sent, not yet decided
        try:
            half = n // 2 if SPLIT_FROM <= n < STREAM_FROM else n
            with _gc_paused():
                keys = batch.hash_range(hasher, region, 0, half)
            if half < n:
                if keys:
                    pending.append(asyncio.ensure_future(self._lookup(route, tenant_id, channel, keys)))
                    await asyncio.sleep(0)  # the first half's lookup goes out now
                with _gc_paused():
                    keys = batch.hash_range(hasher, region, half, n)
            if keys and len(keys) >= STREAM_FROM and half == n:
                try:
                    await self._stream(route.pool, batch, context, tenant_id, channel, keys)
                except REPLICA_FAILURES as exc:
                    if route.replica is None or batch.outcomes:  # on the primary, or rows decided
                        raise
                    await route.give_up_replica(exc)
                    await self._stream(route.pool, batch, context, tenant_id, channel, keys)
            else:
                if keys:
                    pending.append(asyncio.ensure_future(self._lookup(route, tenant_id, channel, keys)))
                batch.set_context(*await context)
                while pending:
                    rows = await pending[0]
                    del pending[0]  # the rows go as soon as they are decided
                    with _gc_paused():
                        batch.decide_rows(rows)
                        del rows
        finally:
            for lookup in pending:  # the batch failed: let every lookup end before going on
                with contextlib.suppress(Exception):
                    await lookup
        with _gc_paused():
            batch.decide_rest()

    def _lookup(
        self, route: Route, tenant_id: int, channel: str, keys: list[bytes]
    ) -> Awaitable[list[asyncpg.Record]]:
        query = self._queries.recipient_states
        return route.run(lambda pool: pool.fetch(query, tenant_id, channel, keys))

    async def _stream(
        self,
        pool: asyncpg.Pool,
        batch: _Batch,
        context: asyncio.Future[tuple[int | None, bool, int | None]],
        tenant_id: int,
        channel: str,
        keys: list[bytes],
    ) -> None:
        """Look a large batch up through a cursor, deciding each slice while PostgreSQL makes the next."""
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            # Planned with this batch's keys, never with a cached generic plan (which probes the
            # index key by key even when one scan of the table would be cheaper).
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            cursor = await conn.cursor(self._queries.recipient_states, tenant_id, channel, keys)
            fetching: asyncio.Future[list[asyncpg.Record]] | None = asyncio.ensure_future(
                cursor.fetch(STREAM_ROWS)
            )
            try:
                batch.set_context(*await context)
                while fetching is not None:
                    rows = await fetching
                    fetching = None
                    if len(rows) == STREAM_ROWS:
                        fetching = asyncio.ensure_future(cursor.fetch(STREAM_ROWS))
                        await asyncio.sleep(0)  # the request for the next slice goes out now
                    with _gc_paused():
                        batch.decide_rows(rows)
                        del rows
            finally:
                if fetching is not None:  # the batch failed: let the fetch end, then roll back
                    with contextlib.suppress(Exception):
                        await fetching

    def _count(
        self,
        principal: Principal,
        channel: str,
        campaign_id: int | None,
        outcomes: Counter[Decision],
        now: datetime,
    ) -> None:
        """Add the batch to this process's pending day counters (flushed in bulk: check_counts.py)."""
        self._counts.add(principal.tenant_id, now.date(), channel, campaign_id, outcomes)
        for decision, n in outcomes.items():
            metrics.CHECKED_RECIPIENTS.labels(channel, str(decision.allowed).lower(), _outcome(decision)).inc(
                n
            )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off around a synchronous loop (no await inside)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Batch:
    """One request's results, filled in as its lookup rows arrive, with everything the loops read.

    `results` holds one slot per recipient, in input order. A recipient with a row gets its result
    when the row arrives; the others (address invalid or not known) at the end, from decisions made
    once per batch.
    """

    __slots__ = (
        "base",
        "campaign_id",
        "channel",
        "earliest",
        "first",
        "hashes",
        "is_email",
        "issued_at",
        "message",
        "mint",
        "mint_many",
        "now",
        "offer",
        "outcomes",
        "policy",
        "purpose",
        "recipients",
        "repeats",
        "results",
        "tenant_id",
        "topic_id",
        "unknown",
        "wants_link",
    )

    message: MessageContext
    topic_id: int | None
    campaign_id: int | None
    unknown: Decision

    def __init__(
        self, service: CheckService, principal: Principal, request: CheckRequest, now: datetime
    ) -> None:
        self.policy = principal.policy
        self.purpose = request.purpose
        self.offer = request.offer
        self.now = now
        self.tenant_id = principal.tenant_id
        self.channel = request.channel
        self.issued_at = int(now.timestamp())
        self.mint = service._keyring.mint
        self.mint_many = service._keyring.mint_many
        self.base = service._unsubscribe_base
        self.is_email = request.channel == "email"
        self.wants_link = request.purpose == "marketing"
        self.recipients = request.recipients
        self.hashes: list[bytes | None] = []
        self.first: dict[bytes, int] = {}  # hash -> position of its first recipient
        # decision -> position of its first recipient: the summary lists outcomes in input order
        self.earliest: dict[Decision, int] = {}
        self.repeats: dict[bytes, list[int]] = {}  # hash -> positions of the same address again
        self.results: list[CheckResult | None] = [None] * len(request.recipients)
        self.outcomes: Counter[Decision] = Counter()

    def set_context(self, topic_id: int | None, topic_soft_opt_in: bool, campaign_id: int | None) -> None:
        """The message's topic and campaign, resolved while the addresses were hashed; before deciding."""
        self.message = MessageContext(
            purpose=self.purpose, topic_id=topic_id, topic_soft_opt_in=topic_soft_opt_in, offer=self.offer
        )
        self.topic_id = topic_id
        self.campaign_id = campaign_id
        # Nothing known about a recipient is the commonest state: decide it once.
        self.unknown = decide(self.policy, self.message, None, self.now)

    @property
    def done(self) -> list[CheckResult]:
        """The results, once decide_rest has filled every slot."""
        return cast("list[CheckResult]", self.results)

    def ordered_outcomes(self) -> Counter[Decision]:
        """The outcome counts in the order each outcome first occurs in the request."""
        earliest = self.earliest
        return Counter({d: self.outcomes[d] for d in sorted(self.outcomes, key=earliest.__getitem__)})

    def hash_range(self, hasher: AddressHasher, region: str, start: int, stop: int) -> list[bytes]:
        """Normalise and hash the addresses at start..stop (ranges in order, from 0 to the end).

        Returns the hashes not seen before: the ones to look up.
        """
        channel = self.channel
        hashes, first, repeats = self.hashes, self.first, self.repeats
        assert len(hashes) == start
        append = hashes.append
        new: list[bytes] = []
        found = new.append
        claim = first.setdefault
        digests = hasher.hash_many(
            channel, [normalise(channel, raw, region) for raw in self.recipients[start:stop]]
        )
        for position, digest in enumerate(digests, start):
            append(digest)
            if digest is None:
                continue
            if claim(digest, position) == position:
                found(digest)
            else:
                repeats.setdefault(digest, []).append(position)
        return new

    def result(self, raw: str, digest: bytes, decision: Decision) -> CheckResult:
        """One recipient's answer, with a freshly minted unsubscribe link when it needs one."""
        if decision.allowed and self.wants_link:
            url = self.base + self.mint(
                TokenClaims(
                    tenant_id=self.tenant_id,
                    channel=self.channel,
                    address_hash=digest,
                    topic_id=self.topic_id,
                    campaign_id=self.campaign_id,
                    issued_at=self.issued_at,
                )
            )
            if self.is_email:
                return CheckResult(
                    recipient=raw,
                    allowed=True,
                    basis=decision.basis,
                    reason=None,
                    unsubscribe_url=url,
                    list_unsubscribe=f"<{url}>",
                    list_unsubscribe_post=ONE_CLICK,
                )
            return CheckResult(
                recipient=raw, allowed=True, basis=decision.basis, reason=None, unsubscribe_url=url
            )
        return CheckResult(
            recipient=raw, allowed=decision.allowed, basis=decision.basis, reason=decision.reason
        )

    def decide_rows(self, rows: list[asyncpg.Record]) -> None:
        """Decide the recipients these lookup rows belong to."""
        policy, message, now = self.policy, self.message, self.now
        recipients, results, first, repeats = self.recipients, self.results, self.first, self.repeats
        wants_link = self.wants_link
        decisions: list[Decision] = []
        counted = decisions.append
        earliest = self.earliest
        seen = earliest.get
        # Allowed recipients that get a link: their tokens are minted together after the loop.
        linked: list[int] = []
        linked_hashes: list[bytes] = []
        linked_bases: list[Basis | None] = []
        for row in rows:
            digest = row[0]
            decision = decide(policy, message, state_of(row), now)
            counted(decision)
            position = first[digest]
            if seen(decision, position + 1) > position:
                earliest[decision] = position
            if decision.allowed and wants_link:
                linked.append(position)
                linked_hashes.append(digest)
                linked_bases.append(decision.basis)
            else:
                results[position] = CheckResult(
                    recipient=recipients[position],
                    allowed=decision.allowed,
                    basis=decision.basis,
                    reason=decision.reason,
                )
            if repeats and digest in repeats:
                for position in repeats[digest]:
                    results[position] = self.result(recipients[position], digest, decision)
                    counted(decision)
        if linked:
            self.linked_results(linked, linked_hashes, linked_bases)
        self.outcomes.update(decisions)

    def linked_results(self, positions: list[int], hashes: list[bytes], bases: list[Basis | None]) -> None:
        """The results of allowed recipients with their links, the tokens minted in one pass."""
        tokens = self.mint_many(
            tenant_id=self.tenant_id,
            channel=self.channel,
            topic_id=self.topic_id,
            campaign_id=self.campaign_id,
            issued_at=self.issued_at,
            address_hashes=hashes,
        )
        recipients, results, base = self.recipients, self.results, self.base
        if self.is_email:
            for position, token, basis in zip(positions, tokens, bases, strict=True):
                url = base + token
                results[position] = CheckResult(
                    recipient=recipients[position],
                    allowed=True,
                    basis=basis,
                    reason=None,
                    unsubscribe_url=url,
                    list_unsubscribe=f"<{url}>",
                    list_unsubscribe_post=ONE_CLICK,
                )
        else:
            for position, token, basis in zip(positions, tokens, bases, strict=True):
                results[position] = CheckResult(
                    recipient=recipients[position],
                    allowed=True,
                    basis=basis,
                    reason=None,
                    unsubscribe_url=base + token,
                )

    def decide_rest(self) -> None:
        """Fill in every recipient without a row: invalid addresses and addresses never seen."""
        invalid, unknown = DENY["invalid_address"], self.unknown
        recipients, results, make = self.recipients, self.results, self.result
        # Unless the purpose allows unknown recipients and wants links, one answer fits them all.
        plain = not (unknown.allowed and self.wants_link)
        allowed, basis, reason = unknown.allowed, unknown.basis, unknown.reason
        n_invalid = n_unknown = first_unknown = 0
        for position, (result, digest) in enumerate(zip(results, self.hashes, strict=True)):
            if result is not None:
                continue
            if digest is None:
                results[position] = CheckResult(
                    recipient=recipients[position], allowed=False, basis=None, reason="invalid_address"
                )
                n_invalid += 1
            else:
                if not n_unknown:
                    first_unknown = position
                n_unknown += 1
                if plain:
                    results[position] = CheckResult(
                        recipient=recipients[position], allowed=allowed, basis=basis, reason=reason
                    )
                else:
                    results[position] = make(recipients[position], digest, unknown)
        if n_invalid:
            self.outcomes[invalid] += n_invalid
            self.earliest[invalid] = self.hashes.index(None)
        if n_unknown:
            self.outcomes[unknown] += n_unknown
            self.earliest[unknown] = min(self.earliest.get(unknown, len(results)), first_unknown)


def _response(
    results: list[CheckResult], outcomes: Counter[Decision], request: CheckRequest
) -> CheckResponse:
    metrics.CHECKS.labels(request.channel, request.purpose).inc()
    reasons: dict[str, int] = {}
    bases: dict[str, int] = {}
    allowed = denied = 0
    for decision, n in outcomes.items():
        if decision.allowed:
            allowed += n
            bases[_outcome(decision)] = bases.get(_outcome(decision), 0) + n
        else:
            denied += n
            reasons[_outcome(decision)] = reasons.get(_outcome(decision), 0) + n
    return CheckResponse(
        results=results,
        summary=CheckSummary(allowed=allowed, denied=denied, reasons=reasons, bases=bases),
    )
