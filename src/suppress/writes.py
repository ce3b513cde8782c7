"""The one write path: intents applied set-based, serialised per recipient, retried on deadlock.

`Writer.apply()` takes a list of intents (`intents.py`), and in one transaction:
1. locks every recipient they touch, in (channel, hash) order (`lock_recipients`), so concurrent
   batches never interleave on one recipient and never wait on each other in a cycle;
2. applies them in rounds — round k holds the k-th intent of each recipient, so per recipient the
   intents apply in the order given — one set-based statement per intent kind and round;
3. rewrites the projection of every touched recipient once (`rewrite_projection`).
A deadlock or serialization failure that still happens (e.g. on a customer row) rolls the
transaction back and runs it again; the caller never sees it. `Writer.run()` gives the same locked,
retried transaction to writes that have their own statements (erasure, restriction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from suppress.effects import enqueue_effects
from suppress.intents import (
    ConsentIntent,
    CustomerIntent,
    Intent,
    LiftIntent,
    ObjectionIntent,
    SoftBounceIntent,
    SuppressIntent,
    UndoIntent,
    recipient_key,
)
from suppress.queue import Queue
from suppress.sql import Queries

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = asyncpg.Connection | PoolConnectionProxy
Key = tuple[str, bytes]

#: Failures that only mean "two transactions met": run the whole transaction again.
CONFLICTS: tuple[type[Exception], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)
ATTEMPTS = 8
#: Keys of event data that are personal data: written to `personal`, outside the sealed line, so
#: erasure scrubs one place (the same list as the database's ledger_personal_keys()).
PERSONAL_KEYS: frozenset[str] = frozenset(
    {
        "ip",
        "user_agent",
        "evidence",
        "note",
        "text",
        "to",
        "from",
        "customer_ref",
        "address",
        "email",
        "phone",
        "name",
    }
)
_json = msgspec.json.encode


def split_personal(data: dict[str, Any], **personal: Any) -> tuple[str, str | None]:
    """An event's data and its personal fields (plus `personal` given, None values left out), as JSON."""
    kept = {k: v for k, v in data.items() if k not in PERSONAL_KEYS}
    private = {k: v for k, v in data.items() if k in PERSONAL_KEYS}
    private.update((k, v) for k, v in personal.items() if v is not None)
    return _json(kept).decode(), _json(private).decode() if private else None


class SuppressOutcome(msgspec.Struct, frozen=True, kw_only=True):
    event_id: int | None  # None: already in force, nothing written
    consents_ended: list[int] = msgspec.field(default_factory=list)


class LiftOutcome(msgspec.Struct, frozen=True, kw_only=True):
    event_id: int | None  # None: nothing to lift


class UndoOutcome(msgspec.Struct, frozen=True, kw_only=True):
    event_id: int | None  # None: nothing to reverse (never unsubscribed there, undone, or replaced)
    topic_id: int | None = None  # the scope reversed (0 = all topics)
    consents_restored: list[int] = msgspec.field(default_factory=list)


class ConsentOutcome(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # written, unchanged (already recorded), erased (refused)
    event_id: int | None = None
    lift_event_id: int | None = None  # the unsubscribe it lifted


class CustomerOutcome(msgspec.Struct, frozen=True, kw_only=True):
    event_id: int | None  # None: the link changed nothing


class SoftBounceOutcome(msgspec.Struct, frozen=True, kw_only=True):
    added: bool  # counted now (False: this message was counted before)
    in_window: int
    threshold: int
    window_days: int
    expired: bool = False  # at the threshold, but the suppression would already have run out
    event_id: int | None = None  # the soft_bounced suppression it wrote


class ObjectionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    found: bool  # False: no such customer
    changed: bool  # False: a lift of a customer that had not objected
    event_ids: list[int] = msgspec.field(default_factory=list)
    addresses: int = 0  # recipients linked to the customer, whose projection was rewritten


Outcome = SuppressOutcome | LiftOutcome | UndoOutcome | ConsentOutcome | CustomerOutcome | SoftBounceOutcome


class Applied(msgspec.Struct, kw_only=True):
    """What a list of intents did: one outcome per intent (in order), the customers' state after
    customer intents, and every event appended."""

    outcomes: list[Outcome]
    customers: dict[str, tuple[bool, Any]] = msgspec.field(default_factory=dict)
    event_ids: list[int] = msgspec.field(default_factory=list)


class Writer:
    """Applies intents for one service process; bound to a pool, the queries and the job queue."""

    def __init__(self, pool: asyncpg.Pool, queries: Queries, job_queue: Queue | None = None) -> None:
        self._pool = pool
        self._q = queries
        self._queue = job_queue

    async def apply(
        self, tenant_id: int, intents: Sequence[Intent], *, db_timeout: float | None = None
    ) -> Applied:
        """Apply the intents (see the module docstring); their effects are enqueued after commit."""
        if not intents:
            return Applied(outcomes=[])
        addresses = recipients_of(intents)

        async def body(conn: Connection) -> Applied:
            return await self.apply_in(conn, tenant_id, intents)

        applied = await self.run(tenant_id, addresses, body, db_timeout=db_timeout)
        await enqueue_effects(self._queue, tenant_id, applied.event_ids)
        return applied

    async def run(
        self,
        tenant_id: int,
        addresses: dict[Key, str | None],
        body: Callable[[Connection], Awaitable[T]],
        *,
        db_timeout: float | None = None,
    ) -> T:
        """Run `body` in one transaction that holds the recipients' locks, then rewrite their
        projection; run it all again after a deadlock or serialization failure."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._pool.acquire(timeout=db_timeout) as conn, write_transaction(conn):
                    await lock(conn, self._q, tenant_id, addresses, db_timeout=db_timeout)
                    result = await body(conn)
                    await rewrite(conn, self._q, tenant_id, addresses, db_timeout=db_timeout)
                    return result
            except CONFLICTS as exc:
                if attempt == ATTEMPTS:
                    raise
                delay = min(0.5, 0.005 * 2**attempt) * (0.5 + random.random())  # noqa: S311
                log.warning("write conflict (%s), attempt %d; retrying", type(exc).__name__, attempt)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def object_customer(
        self, tenant_id: int, intent: ObjectionIntent, *, db_timeout: float | None = None
    ) -> ObjectionOutcome:
        """Record (or lift) a customer's objection and rewrite the projection of every recipient
        linked to it; recipients linked later read it from the customer (rewrite_projection)."""
        keys = await self._linked(self._pool, tenant_id, intent.customer_ref)
        # personal fields, outside the sealed line: erasure scrubs them
        personal = {"customer_ref": intent.customer_ref, **({"note": intent.note} if intent.note else {})}

        async def body(conn: Connection) -> ObjectionOutcome:
            row = await conn.fetchrow(
                self._q.apply_objection,
                tenant_id,
                intent.customer_ref,
                intent.objected,
                intent.at,
                intent.source,
                intent.actor,
                _json(personal).decode(),
                timeout=db_timeout,
            )
            assert row is not None
            if not row["changed"]:
                found = await conn.fetchrow(self._q.customer_by_ref, tenant_id, intent.customer_ref)
                return ObjectionOutcome(found=found is not None, changed=False)
            # Read after the customer row is locked: a link committed meanwhile is here too.
            linked = await self._linked(conn, tenant_id, intent.customer_ref)
            if extra := {k: v for k, v in linked.items() if k not in keys}:
                # out of key order, so this may deadlock with another writer: then all runs again
                await lock(conn, self._q, tenant_id, extra, db_timeout=db_timeout)
                await rewrite(conn, self._q, tenant_id, extra, db_timeout=db_timeout)
            return ObjectionOutcome(
                found=True, changed=True, event_ids=list(row["event_ids"]), addresses=len(linked)
            )

        outcome = await self.run(tenant_id, keys, body, db_timeout=db_timeout)
        await enqueue_effects(self._queue, tenant_id, outcome.event_ids)
        return outcome

    async def _linked(
        self, conn: Connection | asyncpg.Pool, tenant_id: int, customer_ref: str
    ) -> dict[Key, str | None]:
        rows = await conn.fetch(self._q.customer_recipients, tenant_id, [customer_ref])
        return {(r["channel"], bytes(r["address_hash"])): None for r in rows}

    async def apply_in(self, conn: Connection, tenant_id: int, intents: Sequence[Intent]) -> Applied:
        """Apply intents inside a transaction that already holds their recipients' locks (the
        caller rewrites the projection afterwards)."""
        applied = Applied(outcomes=[SuppressOutcome(event_id=None)] * len(intents))
        for round_ in _rounds(intents):
            await self._apply_round(conn, tenant_id, intents, round_, applied)
        return applied

    async def _apply_round(
        self,
        conn: Connection,
        tenant_id: int,
        intents: Sequence[Intent],
        round_: list[int],
        applied: Applied,
    ) -> None:
        by_kind: dict[type, list[int]] = {}
        for n in round_:
            by_kind.setdefault(type(intents[n]), []).append(n)
        for n in by_kind.get(SoftBounceIntent, []):
            bounce = intents[n]
            assert isinstance(bounce, SoftBounceIntent)
            applied.outcomes[n] = await self._soft_bounce(conn, tenant_id, bounce, applied)
        if numbers := by_kind.get(SuppressIntent):
            picked = [(n, intents[n]) for n in numbers]
            for n, outcome in (await self._suppress(conn, tenant_id, picked)).items():
                applied.outcomes[n] = outcome
                if outcome.event_id is not None:
                    applied.event_ids.append(outcome.event_id)
        if numbers := by_kind.get(LiftIntent):
            await self._lift(conn, tenant_id, [(n, intents[n]) for n in numbers], applied)
        if numbers := by_kind.get(UndoIntent):
            await self._undo(conn, tenant_id, [(n, intents[n]) for n in numbers], applied)
        if numbers := by_kind.get(ConsentIntent):
            await self._consent(conn, tenant_id, [(n, intents[n]) for n in numbers], applied)
        if numbers := by_kind.get(CustomerIntent):
            await self._customer(conn, tenant_id, [(n, intents[n]) for n in numbers], applied)

    # -- one statement per intent kind and round ---------------------------------------------------

    async def _suppress(
        self, conn: Connection, tenant_id: int, picked: list[tuple[int, Any]]
    ) -> dict[int, SuppressOutcome]:
        result = await conn.fetch(self._q.apply_suppressions, tenant_id, *_arrays(picked, SUPPRESS_FIELDS))
        outcomes = {n: SuppressOutcome(event_id=None) for n, _ in picked}
        for r in result:
            outcomes[r["n"]] = SuppressOutcome(
                event_id=r["event_id"], consents_ended=list(r["consents_ended"])
            )
        return outcomes

    async def _lift(
        self, conn: Connection, tenant_id: int, picked: list[tuple[int, Any]], applied: Applied
    ) -> None:
        result = await conn.fetch(self._q.apply_lifts, tenant_id, *_arrays(picked, LIFT_FIELDS))
        for n, _ in picked:
            applied.outcomes[n] = LiftOutcome(event_id=None)
        for r in result:
            applied.outcomes[r["n"]] = LiftOutcome(event_id=r["event_id"])
            applied.event_ids.append(r["event_id"])

    async def _undo(
        self, conn: Connection, tenant_id: int, picked: list[tuple[int, Any]], applied: Applied
    ) -> None:
        result = await conn.fetch(self._q.apply_undos, tenant_id, *_arrays(picked, UNDO_FIELDS))
        for n, _ in picked:
            applied.outcomes[n] = UndoOutcome(event_id=None)
        for r in result:
            applied.outcomes[r["n"]] = UndoOutcome(
                event_id=r["event_id"], topic_id=r["scope"], consents_restored=list(r["consents_restored"])
            )
            applied.event_ids.append(r["event_id"])

    async def _consent(
        self, conn: Connection, tenant_id: int, picked: list[tuple[int, Any]], applied: Applied
    ) -> None:
        result = await conn.fetch(self._q.apply_consents, tenant_id, *_arrays(picked, CONSENT_FIELDS))
        for r in result:
            applied.outcomes[r["n"]] = ConsentOutcome(
                status=r["status"], event_id=r["event_id"], lift_event_id=r["lift_event_id"]
            )
            applied.event_ids.extend(e for e in (r["event_id"], r["lift_event_id"]) if e is not None)

    async def _customer(
        self, conn: Connection, tenant_id: int, picked: list[tuple[int, Any]], applied: Applied
    ) -> None:
        result = await conn.fetch(self._q.apply_customer_links, tenant_id, *_arrays(picked, CUSTOMER_FIELDS))
        for n, _ in picked:
            applied.outcomes[n] = CustomerOutcome(event_id=None)
        for r in result:
            applied.outcomes[r["n"]] = CustomerOutcome(event_id=r["event_id"])
            applied.event_ids.append(r["event_id"])
        # every event moves its customer (a known link can still carry a later purchase time)
        customers = await conn.fetch(
            self._q.apply_customers,
            tenant_id,
            [i.customer_ref for _, i in picked],
            [i.event for _, i in picked],
            [i.at for _, i in picked],
        )
        for c in customers:
            applied.customers[c["customer_ref"]] = (c["agreement_open"], c["last_purchase_at"])

    async def _soft_bounce(
        self, conn: Connection, tenant_id: int, bounce: SoftBounceIntent, applied: Applied
    ) -> SoftBounceOutcome:
        # counted under the recipient's lock: concurrent bounces of one recipient each see the others
        row = await conn.fetchrow(
            self._q.record_soft_bounce,
            tenant_id,
            bounce.channel,
            bounce.address_hash,
            bounce.observation_key[:400],
            bounce.observed_at,
            bounce.provider_event_id,
        )
        assert row is not None
        outcome = SoftBounceOutcome(
            added=row["added"],
            in_window=row["in_window"],
            threshold=row["threshold"],
            window_days=row["window_days"],
        )
        if row["in_window"] < row["threshold"] or not (row["added"] or bounce.recheck):
            return outcome
        expires_at = row["latest"] + timedelta(days=row["suppress_days"])
        if expires_at <= bounce.now:  # an old report: the suppression would have run out already
            return msgspec.structs.replace(outcome, expired=True)
        suppress = SuppressIntent(
            channel=bounce.channel,
            address_hash=bounce.address_hash,
            address=bounce.address,
            topic_id=0,
            reason="soft_bounced",
            occurred_at=bounce.observed_at,
            source=bounce.source,
            actor=bounce.actor,
            expires_at=expires_at,
            campaign_id=bounce.campaign_id,
            data={**bounce.data, "soft_bounces": row["in_window"], "window_days": row["window_days"]},
        )
        written = (await self._suppress(conn, tenant_id, [(0, suppress)]))[0]
        if written.event_id is not None:
            applied.event_ids.append(written.event_id)
        return msgspec.structs.replace(outcome, event_id=written.event_id)


# The parameter arrays of each apply statement, in its $2, $3, ... order (sql/writes.sql): intent
# fields by name, "n" the intent's number, "data" and "personal" its event's split JSON.
SUPPRESS_FIELDS = (
    "n channel address_hash topic_id reason expires_at campaign_id note source actor occurred_at data kind "
    "only_if_new personal"
)
LIFT_FIELDS = "n channel address_hash topic_id reason expired_by source actor occurred_at data personal"
UNDO_FIELDS = "n channel address_hash undoes link source actor occurred_at data personal"
CONSENT_FIELDS = (
    "n channel address_hash topic_id partners source notice_version evidence granted_at actor data "
    "only_if_new personal"
)
CUSTOMER_FIELDS = (
    "n customer_ref channel address_hash collected_in_sale event at source actor data only_if_new"
)


def _arrays(picked: list[tuple[int, Any]], fields: str) -> list[list[Any]]:
    """One parameter array per field name: what a set-based statement takes for these intents."""
    split = [split_personal(i.data, note=getattr(i, "note", None)) for _, i in picked]
    special: dict[str, list[Any]] = {
        "n": [n for n, _ in picked],
        "data": [data for data, _ in split],
        "personal": [personal for _, personal in split],
    }
    arrays = []
    for name in fields.split():
        if name in special:
            arrays.append(special[name])
        elif name == "evidence":
            arrays.append([_json(i.evidence).decode() for _, i in picked])
        else:
            arrays.append([getattr(i, name) for _, i in picked])
    return arrays


# -- the transaction, locking and the projection -----------------------------------------------------


@contextlib.asynccontextmanager
async def write_transaction(conn: Connection) -> AsyncIterator[None]:
    """A transaction for the write statements, begun in the same round trip as its one setting:
    generic plans. The statements' shapes are fixed (probes per input row), so planning them again
    for every write, as PostgreSQL may choose to for statements with array parameters, only costs."""
    await conn.execute("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan")
    try:
        yield
    except BaseException:
        if not conn.is_closed():
            with contextlib.suppress(Exception):  # a broken connection is dropped by the pool
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def lock(
    conn: Connection,
    queries: Queries,
    tenant_id: int,
    addresses: dict[Key, str | None],
    *,
    db_timeout: float | None = None,
) -> None:
    """Lock the recipients' rows in key order (creating missing ones)."""
    keys = sorted(addresses)
    await conn.execute(
        queries.lock_recipients,
        tenant_id,
        [c for c, _ in keys],
        [h for _, h in keys],
        [addresses[k] for k in keys],
        timeout=db_timeout,
    )


async def rewrite(
    conn: Connection,
    queries: Queries,
    tenant_id: int,
    keys: Iterable[Key],
    *,
    db_timeout: float | None = None,
) -> None:
    """Rewrite the projection of these recipients from their suppressions, consents and links."""
    ordered = sorted(keys)
    await conn.execute(
        queries.rewrite_projection,
        tenant_id,
        [c for c, _ in ordered],
        [h for _, h in ordered],
        timeout=db_timeout,
    )


def recipients_of(intents: Sequence[Intent]) -> dict[Key, str | None]:
    """Every recipient the intents touch, with the address to store (the last one given)."""
    addresses: dict[Key, str | None] = {}
    for intent in intents:
        key = recipient_key(intent)
        address = getattr(intent, "address", None)
        if address is not None or key not in addresses:
            addresses[key] = address
    return addresses


def _rounds(intents: Sequence[Intent]) -> list[list[int]]:
    """Intent numbers in rounds: round k holds the k-th intent of each recipient."""
    rounds: list[list[int]] = []
    seen: dict[Key, int] = {}
    for n, intent in enumerate(intents):
        key = recipient_key(intent)
        index = seen.get(key, 0)
        seen[key] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(n)
    return rounds
