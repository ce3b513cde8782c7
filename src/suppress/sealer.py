"""The sealer: closes each tenant's unsealed events into its next checkpoint (docs/ledger.md).

Run by the worker every second (workers/ledger.py) and by `suppress ledger seal`. Per tenant, one
transaction holds the tenant's sealing lock (an advisory lock: a second sealer skips the tenant
instead of forking its checkpoints), reads the newest checkpoint, the tenant's marks and its
unsealed events in id order, and writes the checkpoint, one seal row per event (insert-only) and the
marks in one statement. Unsealed means above the highest sealed id, or below it and above the
settled mark without a seal: an event that commits late with a lower id is sealed next time.
"""

from __future__ import annotations

import logging

import asyncpg
import msgspec

from suppress import merkle
from suppress.ledger import (
    GENESIS,
    Checkpoint,
    Conn,
    body_hash,
    body_mac,
    body_of,
    canonical_line,
    checkpoint_body,
    checkpoint_out,
    leaf_macs,
    personal_hash,
)
from suppress.sql import Queries

log = logging.getLogger(__name__)

# At most this many events per checkpoint (a first seal of a large migrated ledger makes several).
MAX_CHECKPOINT_SIZE = 50_000


class Sealed(msgspec.Struct, frozen=True, kw_only=True):
    """A checkpoint just made, and the webhook deliveries queued for it."""

    checkpoint: Checkpoint
    deliveries: list[int]


# One seal per event, COPYed in the checkpoint's transaction (event_seals, migration 0009).
SEAL_COLUMNS = [
    "tenant_id",
    "event_id",
    "checkpoint_seq",
    "leaf_index",
    "leaf_hash",
    "leaf_mac",
    "personal_hash",
]


def _leaves(rows: list[asyncpg.Record]) -> tuple[list[bytes], list[bytes]]:
    """Each event's personal hash (kept from the legacy chain, or computed now) and leaf hash."""
    personal: list[bytes] = []
    leaves: list[bytes] = []
    for row in rows:
        stored = row["personal_hash"]
        digest = bytes(stored) if stored is not None else personal_hash(row["personal_text"])
        personal.append(digest)
        leaves.append(merkle.leaf_hash(canonical_line(row, digest)))
    return personal, leaves


class _Marks(msgspec.Struct, frozen=True, kw_only=True):
    """What the seal writes into the tenant's marks: the settled id and a new pending one (or None)."""

    settled: int
    pending: int | None


def _next_marks(state: asyncpg.Record, truncated: bool) -> _Marks:
    """Settle the pending mark when no transaction that could hold a lower id is left and this
    seal reads everything up to it; otherwise keep waiting on it (a fresh one would never settle
    under steady load)."""
    if state["pending"] is None:
        return _Marks(settled=state["settled"], pending=state["last_id"])
    if state["quiet"] and not truncated:
        return _Marks(settled=max(state["settled"], state["pending"]), pending=state["last_id"])
    return _Marks(settled=state["settled"], pending=None)


async def seal_tenant(
    conn: Conn,
    queries: Queries,
    key: bytes,
    tenant_id: int,
    *,
    max_size: int = MAX_CHECKPOINT_SIZE,
) -> list[Sealed]:
    """Seal every unsealed event of one tenant; [] when there is none or another sealer is at it."""
    made: list[Sealed] = []
    while True:
        async with conn.transaction():
            lock = await conn.fetchrow(queries.ledger_seal_lock, tenant_id)
            assert lock is not None
            if not lock["locked"]:
                return made
            # the state (and whether the pending mark can settle) before the events: see ledger_seal_state
            state = await conn.fetchrow(queries.ledger_seal_state, tenant_id)
            assert state is not None
            rows = await conn.fetch(
                queries.ledger_unsealed_events, tenant_id, state["settled"], state["sealed_high"], max_size
            )
            marks = _next_marks(state, truncated=len(rows) >= max_size)
            if not rows:
                if state["settled"] < state["sealed_high"] and marks.pending is not None:
                    await conn.execute(queries.ledger_settle, tenant_id, marks.settled, marks.pending)
                return made
            seq = 1 if state["seq"] is None else state["seq"] + 1
            previous = GENESIS if state["seq"] is None else body_hash(body_of(state))
            personal, leaves = _leaves(rows)
            root = merkle.root(leaves)
            first, final = rows[0]["id"], rows[-1]["id"]
            body = checkpoint_body(tenant_id, seq, len(rows), first, final, root, previous, lock["now"])
            mac = body_mac(key, body)
            deliveries = await conn.fetchval(
                queries.ledger_seal,
                tenant_id,
                seq,
                len(rows),
                first,
                final,
                root,
                previous,
                lock["now"],
                mac,
                marks.settled,
                marks.pending,
            )
            macs = leaf_macs(key, tenant_id, seq, leaves)
            status = await conn.copy_records_to_table(
                "event_seals",
                columns=SEAL_COLUMNS,
                records=[
                    (tenant_id, r["id"], seq, i, leaf, leaf_mac, p)
                    for i, (r, p, leaf, leaf_mac) in enumerate(zip(rows, personal, leaves, macs, strict=True))
                ],
            )
            if status != f"COPY {len(rows)}":  # cannot happen under the lock; never store a short tree
                raise RuntimeError(f"tenant {tenant_id}: {status} of {len(rows)} seals")
            stored = {
                "tenant_id": tenant_id,
                "seq": seq,
                "tree_size": len(rows),
                "first_event_id": first,
                "last_event_id": final,
                "root": root,
                "previous": previous,
                "created_at": lock["now"],
                "mac": mac,
            }
            made.append(Sealed(checkpoint=checkpoint_out(stored), deliveries=list(deliveries)))
        if len(rows) < max_size:
            return made


async def seal_all(pool: asyncpg.Pool, queries: Queries, key: bytes) -> list[Sealed]:
    """Seal every tenant that has unsealed events; returns the checkpoints made."""
    made: list[Sealed] = []
    async with pool.acquire() as conn:
        for row in await conn.fetch(queries.ledger_unsealed_tenants):
            made.extend(await seal_tenant(conn, queries, key, row["tenant_id"]))
    return made
