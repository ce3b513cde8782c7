"""The tamper-evident ledger: verifying a tenant's hash chains, independently of the database.

The chains are built on insert by the `ledger_append` trigger (migration 0004): each tenant has 16
chains ("lanes", by the first byte of the address hash, so one busy tenant's writers do not queue
behind one lock). This module re-derives every hash in Python from the stored fields and checks, per
lane, in order:

- each event sits in the lane its address hash gives;
- its `personal_hash` matches its personal fields (unless erased, when they are gone);
- its hash = sha256(previous hash || canonical line);
- its `prev_hash` is the previous event's hash and `seq` runs 1, 2, 3, ... without gaps;
- the lane ends where `ledger_heads` says it does (so deleting the newest events shows).

Any edit, deletion, insertion or reordering of events therefore breaks verification at the first
affected event. (Someone who can rewrite a whole chain *and* its head can forge it; publish
`suppress ledger head` outside the database now and then to anchor the chains.)
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from suppress.sql import Queries

GENESIS = bytes(32)
LANES = 16
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
PAGE = 5000


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of verifying one tenant's chains."""

    ok: bool
    events: int
    heads: dict[int, str]
    first_bad_event: int | None = None
    first_bad_lane: int | None = None
    first_bad_seq: int | None = None
    problem: str | None = None


def lane_of(address_hash: bytes) -> int:
    """The chain an address's events go to (must match ledger_lane() in the database)."""
    return address_hash[0] % LANES


def _micros(moment: datetime) -> str:
    return str((moment - _EPOCH) // _MICROSECOND)


def canonical_line(row: asyncpg.Record) -> bytes:
    """The event's canonical text, exactly as the database's ledger_line() builds it."""
    fields = [
        str(row["lane"]),
        str(row["seq"]),
        str(row["tenant_id"]),
        str(row["id"]),
        row["channel"],
        row["address_hash"].hex(),
        row["kind"],
        "" if row["topic_id"] is None else str(row["topic_id"]),
        "" if row["campaign_id"] is None else str(row["campaign_id"]),
        row["source"],
        row["actor"] or "",
        _micros(row["occurred_at"]),
        _micros(row["recorded_at"]),
        row["data_text"],
        row["personal_hash"].hex(),
    ]
    return "\x1f".join(fields).encode()


async def _chain(
    conn: asyncpg.Connection, queries: Queries, tenant_id: int, lane: int
) -> AsyncIterator[asyncpg.Record]:
    after = 0
    while True:
        rows = await conn.fetch(queries.ledger_events_for_verify, tenant_id, lane, after, PAGE)
        for row in rows:
            yield row
        if len(rows) < PAGE:
            return
        after = rows[-1]["seq"]


class _Broken(Exception):
    def __init__(self, row: asyncpg.Record | None, lane: int, seq: int, problem: str) -> None:
        super().__init__(problem)
        self.row, self.lane, self.seq, self.problem = row, lane, seq, problem


async def _verify_lane(
    conn: asyncpg.Connection, queries: Queries, tenant_id: int, lane: int, head: tuple[int, bytes]
) -> int:
    """Check one chain; returns its length or raises _Broken at the first bad event."""
    head_seq, head_hash = head
    previous, expected = GENESIS, 1
    async for row in _chain(conn, queries, tenant_id, lane):
        if lane_of(bytes(row["address_hash"])) != lane:
            raise _Broken(row, lane, row["seq"], "the event sits in another recipient's chain: it was moved")
        if row["seq"] != expected:
            raise _Broken(
                row,
                lane,
                row["seq"],
                f"sequence jumps from {expected - 1} to {row['seq']}: events missing or reordered",
            )
        if bytes(row["prev_hash"]) != previous:
            raise _Broken(
                row,
                lane,
                row["seq"],
                "prev_hash is not the previous event's hash: an event before it was changed or removed",
            )
        personal = row["personal_text"]
        if personal is not None and hashlib.sha256(personal.encode()).digest() != bytes(row["personal_hash"]):
            raise _Broken(
                row, lane, row["seq"], "personal fields do not match personal_hash: they were altered"
            )
        digest = hashlib.sha256(previous + canonical_line(row)).digest()
        if digest != bytes(row["hash"]):
            raise _Broken(
                row, lane, row["seq"], "hash does not match the event's fields: the event was altered"
            )
        previous = digest
        expected += 1
    if expected - 1 != head_seq or previous != head_hash:
        raise _Broken(
            None,
            lane,
            expected,
            f"chain {lane} ends at event {expected - 1} but its head says {head_seq}: "
            "the newest events were removed or the head was altered",
        )
    return expected - 1


async def verify_chain(conn: asyncpg.Connection, queries: Queries, tenant_id: int) -> VerifyResult:
    """Re-derive and check every chain of one tenant."""
    heads = {
        r["lane"]: (int(r["last_seq"]), bytes(r["last_hash"]))
        for r in await conn.fetch(queries.ledger_head, tenant_id)
    }
    lanes = sorted(set(heads) | {r["lane"] for r in await conn.fetch(queries.ledger_lanes_in_use, tenant_id)})
    shown = {lane: digest.hex() for lane, (_, digest) in heads.items()}
    count = 0
    try:
        for lane in lanes:
            count += await _verify_lane(conn, queries, tenant_id, lane, heads.get(lane, (0, GENESIS)))
    except _Broken as broken:
        return VerifyResult(
            ok=False,
            events=count,
            heads=shown,
            first_bad_event=broken.row["id"] if broken.row is not None else None,
            first_bad_lane=broken.lane,
            first_bad_seq=broken.seq,
            problem=broken.problem,
        )
    return VerifyResult(ok=True, events=count, heads=shown)
