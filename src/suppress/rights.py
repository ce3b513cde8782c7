"""The data subject's rights under the GDPR: access (Art. 15), erasure that keeps a hashed
suppression (Art. 17 with 17(3)), restriction (Art. 18) and objection to direct marketing (Art. 21).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from msgspec import Meta

from suppress import metrics
from suppress.effects import enqueue_effects
from suppress.errors import InvalidInput, NotFound
from suppress.intents import ObjectionIntent, RuleBroken, check_objection
from suppress.ledger import inclusion_proofs
from suppress.models import Channel, ShortText
from suppress.queue import Queue
from suppress.recipients import Recipients
from suppress.replicas import Reads
from suppress.sql import Queries
from suppress.tenants import Principal
from suppress.writes import Connection, Key
from suppress.writing import Inbound

# An access request returns the whole ledger of an address; this many events at the most per page
# of the underlying query (the export itself is complete).
EXPORT_EVENTS = 1_000_000


class RestrictIn(Inbound, frozen=True):
    note: ShortText | None = None


class LiftObjectionIn(Inbound, frozen=True):
    """Why the objection ends (e.g. the person's written request); kept in the ledger."""

    note: Annotated[str, Meta(min_length=1, max_length=2000)]


class RightsResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a rights request did."""

    channel: Channel | None = None
    address: str | None = None
    customer_ref: str | None = None
    event_ids: list[int] = msgspec.field(default_factory=list)
    addresses: int = 0
    changed: bool = True


class RecipientExport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything held about one address (GDPR Art. 15)."""

    controller: str
    channel: Channel
    address: str
    generated_at: datetime
    known: bool
    state: dict[str, Any] | None
    consents: list[dict[str, Any]]
    suppressions: list[dict[str, Any]]
    customers: list[dict[str, Any]]
    events: list[dict[str, Any]]


class CustomerExport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything held about one customer and each of its addresses."""

    controller: str
    customer_ref: str
    generated_at: datetime
    customer: dict[str, Any]
    addresses: list[RecipientExport]


class Rights:
    """Access, erasure, restriction and objection, on top of the write core."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        recipients: Recipients,
        job_queue: Queue | None = None,
        reads: Reads | None = None,
    ) -> None:
        self._pool = pool
        self._reads = reads or Reads(pool)
        self._q = queries
        self._recipients = recipients
        self._queue = job_queue
        self._writer = recipients.writer

    # -- access ----------------------------------------------------------------------------------

    async def export_recipient(
        self, principal: Principal, channel: Channel, raw_address: str, now: datetime
    ) -> RecipientExport:
        """The state row, consents with evidence, suppressions, customer links and the full ledger."""
        normalised, digest = self._recipients.key(principal, channel, raw_address)
        return await self._export(principal, channel, digest, normalised, now)

    async def _export(
        self, principal: Principal, channel: str, digest: bytes, shown: str, now: datetime
    ) -> RecipientExport:
        args = (principal.tenant_id, channel, digest)

        async def read(pool: asyncpg.Pool) -> tuple[Any, Any, list[Any], dict[int, Any]]:
            async with pool.acquire() as conn:
                row = await conn.fetchrow(self._q.recipient_export_row, *args)
                details = await conn.fetchrow(self._q.recipient_details, *args)
                history = await conn.fetch(self._q.recipient_events, *args, EXPORT_EVENTS)
                # each event's inclusion proof in its checkpoint (docs/ledger.md), or `sealed: false`
                ids = [e["id"] for e in history]
                proofs = await inclusion_proofs(conn, self._q, principal.tenant_id, ids)
            return row, details, history, proofs

        row, details, history, proofs = await self._reads.run(principal, read)
        assert details is not None
        return RecipientExport(
            controller=principal.tenant_name,
            channel=channel,  # type: ignore[arg-type]
            address=shown,
            generated_at=now,
            known=row is not None,
            state=None if row is None else dict(row.items()),
            consents=details["consents"],
            suppressions=details["suppressions"],
            customers=details["customers"],
            events=[{**dict(e.items()), "ledger": proofs[e["id"]]} for e in history],
        )

    async def export_customer(self, principal: Principal, customer_ref: str, now: datetime) -> CustomerExport:
        """A customer's record and the export of every address linked to it."""

        async def read(pool: asyncpg.Pool) -> tuple[Any, list[Any]]:
            async with pool.acquire() as conn:
                customer = await conn.fetchrow(self._q.customer_by_ref, principal.tenant_id, customer_ref)
                links = await conn.fetch(self._q.customer_addresses, principal.tenant_id, customer_ref)
            return customer, links

        customer, links = await self._reads.run(principal, read)
        if customer is None:
            raise NotFound(f"no customer {customer_ref!r}")
        exports = [
            await self._export(
                principal, link["channel"], link["address_hash"], link["address"] or "(erased)", now
            )
            for link in links
        ]
        return CustomerExport(
            controller=principal.tenant_name,
            customer_ref=customer_ref,
            generated_at=now,
            customer=dict(customer.items()),
            addresses=exports,
        )

    # -- erasure ---------------------------------------------------------------------------------

    async def erase_recipient(
        self, principal: Principal, channel: Channel, raw_address: str, now: datetime
    ) -> RightsResult:
        """Erase one address; its keyed hash stays suppressed as `erased`."""
        normalised, digest = self._recipients.key(principal, channel, raw_address)

        async def erase(conn: Connection) -> int:
            return await self._erase(conn, principal, channel, digest, now, normalised)

        event_id = await self._writer.run(principal.tenant_id, {(channel, digest): None}, erase)
        await enqueue_effects(self._queue, principal.tenant_id, [event_id])
        return RightsResult(channel=channel, event_ids=[event_id], addresses=1)

    async def _erase(
        self,
        conn: Connection,
        principal: Principal,
        channel: str,
        digest: bytes,
        now: datetime,
        address: str | None,
    ) -> int:
        row = await conn.fetchrow(
            self._q.erase_recipient, principal.tenant_id, channel, digest, "api", principal.actor, now
        )
        assert row is not None
        # copies outside the ledger are found by the address itself (lower case; digits for a phone)
        needle = address.lstrip("+").lower() if address else None
        if needle:
            await conn.execute(self._q.scrub_stored_copies, principal.tenant_id, needle, channel, digest)
        metrics.WRITES.labels("erased").inc()
        return int(row["event_id"])

    async def _customer_keys(self, principal: Principal, customer_ref: str) -> dict[Key, str | None]:
        """The recipients linked to a customer: the keys a customer-wide write locks."""
        rows = await self._pool.fetch(self._q.customer_recipients, principal.tenant_id, [customer_ref])
        return {(r["channel"], r["address_hash"]): None for r in rows}

    async def erase_customer(self, principal: Principal, customer_ref: str, now: datetime) -> RightsResult:
        """Erase every address of a customer, then the customer record itself."""

        async def erase(conn: Connection) -> tuple[list[int], int]:
            links = await conn.fetch(self._q.customer_addresses, principal.tenant_id, customer_ref)
            customer = await conn.fetchrow(self._q.customer_by_ref, principal.tenant_id, customer_ref)
            if customer is None:
                raise NotFound(f"no customer {customer_ref!r}")
            event_ids = [
                await self._erase(
                    conn, principal, link["channel"], link["address_hash"], now, link["address"]
                )
                for link in links
            ]
            await conn.execute(self._q.delete_customer, principal.tenant_id, customer_ref)
            return event_ids, len(links)

        keys = await self._customer_keys(principal, customer_ref)
        event_ids, addresses = await self._writer.run(principal.tenant_id, keys, erase)
        await enqueue_effects(self._queue, principal.tenant_id, event_ids)
        return RightsResult(customer_ref=customer_ref, event_ids=event_ids, addresses=addresses)

    # -- restriction -----------------------------------------------------------------------------

    async def restrict(
        self,
        principal: Principal,
        channel: Channel,
        raw_address: str,
        *,
        restricted: bool,
        note: str | None,
        now: datetime,
    ) -> RightsResult:
        """Restrict processing (every send denied `restricted`) or lift the restriction."""
        normalised, digest = self._recipients.key(principal, channel, raw_address)

        async def restrict(conn: Connection) -> Any:
            return await conn.fetchrow(
                self._q.set_restriction,
                principal.tenant_id,
                channel,
                digest,
                restricted,
                note,
                "api",
                principal.actor,
                now,
            )

        row = await self._writer.run(principal.tenant_id, {(channel, digest): normalised}, restrict)
        if row is None:
            return RightsResult(channel=channel, address=normalised, changed=False)
        await enqueue_effects(self._queue, principal.tenant_id, [row["event_id"]])
        return RightsResult(channel=channel, address=normalised, event_ids=[row["event_id"]])

    # -- objection -------------------------------------------------------------------------------

    async def object(self, principal: Principal, customer_ref: str, now: datetime) -> RightsResult:
        """Art. 21 objection, recorded on the customer: every address linked to it, now or later, is
        denied `objected` for every channel, topic and offer until the person gives a new consent
        (for that consent's scope) or an admin lifts the objection with a note."""
        return await self._objection(principal, customer_ref, objected=True, note=None, now=now)

    async def lift_objection(
        self, principal: Principal, customer_ref: str, note: str, now: datetime
    ) -> RightsResult:
        """An admin ends a customer's objection, saying why in `note` (kept in the ledger)."""
        return await self._objection(principal, customer_ref, objected=False, note=note, now=now)

    async def _objection(
        self, principal: Principal, customer_ref: str, *, objected: bool, note: str | None, now: datetime
    ) -> RightsResult:
        intent = ObjectionIntent(
            customer_ref=customer_ref,
            objected=objected,
            at=now,
            source="api",
            actor=principal.actor,
            note=note,
        )
        try:
            check_objection(intent)
        except RuleBroken as exc:
            raise InvalidInput(str(exc)) from None
        outcome = await self._writer.object_customer(principal.tenant_id, intent)
        if not outcome.found:
            raise NotFound(f"no customer {customer_ref!r}")
        metrics.WRITES.labels("objected" if objected else "objection_lifted").inc()
        return RightsResult(
            customer_ref=customer_ref,
            event_ids=outcome.event_ids,
            addresses=outcome.addresses,
            changed=outcome.changed,
        )
