"""Verifying a tenant's ledger independently of the database's own claims (docs/ledger.md).

Re-derives every canonical line and leaf, every checkpoint's root and body, and checks, in
(checkpoint, leaf) order:

- leaves run 0, 1, 2, ... in increasing event id, each event's personal fields match its hash;
- each leaf hash matches the event's fields, and with the key, its leaf MAC (names a rewritten event);
- every seal has its event (a deleted event leaves its seal behind);
- each checkpoint holds exactly its tree size of events and their tree has its root;
- against checkpoints the tenant kept (a file of what the API or webhooks gave it): the same root,
  and the same checkpoint — which needs no trust in the database's checkpoint table, nor the key;
- checkpoints run 1, 2, 3, ..., each naming the previous one's hash, each with a valid MAC (key);
- every event the legacy per-lane chains (migration 0004) hold still chains by the old rules.

Events not sealed yet are counted, not judged: the sealer closes them within about a second —
unless one lies at or below the tenant's settled mark, where the sealer never looks again.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

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
    event_fields,
    leaf_mac,
)
from suppress.sql import Queries

PAGE = 5000
LANES = 16


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of verifying one tenant's ledger."""

    ok: bool
    events: int
    checkpoints: int
    unsealed: int
    oldest_unsealed: datetime | None = None
    head: str | None = None
    key_checked: bool = False
    kept_checked: int = 0
    legacy_events: int = 0
    first_bad_event: int | None = None
    first_bad_checkpoint: int | None = None
    problem: str | None = None


class Broken(Exception):
    def __init__(self, problem: str, *, event: int | None = None, checkpoint: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.event, self.checkpoint = problem, event, checkpoint


def load_kept(data: bytes) -> dict[int, Checkpoint]:
    """Checkpoints a tenant kept: a JSON list of them, or pages of GET /v1/ledger/checkpoints
    (one object or a list of them). Each must hash to the `hash` it carries."""
    value = msgspec.json.decode(data)
    if isinstance(value, dict):
        value = [value]
    items: list[Any] = []
    for entry in value:
        items.extend(entry["items"] if isinstance(entry, dict) and "items" in entry else [entry])
    kept = {c.seq: c for c in msgspec.convert(items, list[Checkpoint])}
    for c in kept.values():
        if body_hash(c.body()).hex() != c.hash:
            raise ValueError(f"kept checkpoint {c.seq} does not hash to the hash it carries")
        if c.seq - 1 in kept and kept[c.seq - 1].hash != c.previous:
            raise ValueError(f"kept checkpoints {c.seq - 1} and {c.seq} do not chain")
    return kept


async def _checkpoints(conn: Conn, queries: Queries, tenant_id: int) -> AsyncIterator[asyncpg.Record]:
    after = 0
    while True:
        rows = await conn.fetch(queries.ledger_checkpoints_after, tenant_id, after, PAGE)
        for row in rows:
            yield row
        if len(rows) < PAGE:
            return
        after = rows[-1]["seq"]


async def _sealed(conn: Conn, queries: Queries, tenant_id: int) -> AsyncIterator[asyncpg.Record]:
    after = (-(2**62), 0)
    while True:
        rows = await conn.fetch(queries.ledger_sealed_events, tenant_id, *after, PAGE)
        for row in rows:
            yield row
        if len(rows) < PAGE:
            return
        after = (rows[-1]["checkpoint_seq"], rows[-1]["leaf_index"])


def _check_event(row: asyncpg.Record, index: int, previous_id: int | None, key: bytes | None) -> bytes:
    """One seal and its event against its position; returns its recomputed leaf hash."""
    event, seq = row["id"], row["checkpoint_seq"]
    if row["leaf_index"] != index:
        raise Broken(
            f"checkpoint {seq}: leaf {index} expected but the event says {row['leaf_index']}: "
            "events were removed, moved or added",
            event=event,
            checkpoint=seq,
        )
    if previous_id is not None and event <= previous_id:
        raise Broken(
            f"checkpoint {seq}: leaves out of event order: events were reordered", event=event, checkpoint=seq
        )
    if not row["found"]:
        raise Broken(
            f"checkpoint {seq}: leaf {index}'s event is gone: it was deleted", event=event, checkpoint=seq
        )
    personal = row["personal_text"]
    if personal is not None and hashlib.sha256(personal.encode()).digest() != bytes(row["personal_hash"]):
        raise Broken(
            "personal fields do not match personal_hash: they were altered", event=event, checkpoint=seq
        )
    leaf = merkle.leaf_hash(canonical_line(row))
    if leaf != bytes(row["leaf_hash"]):
        raise Broken(
            "the event's fields do not hash to its leaf: the event was altered", event=event, checkpoint=seq
        )
    if key is not None and leaf_mac(key, row["tenant_id"], seq, index, leaf) != bytes(row["leaf_mac"]):
        raise Broken(
            "the leaf MAC does not match: the event was rewritten and its hashes recomputed without the key",
            event=event,
            checkpoint=seq,
        )
    return leaf


def _check_checkpoint(
    cp: asyncpg.Record | None,
    seq: int,
    events: list[asyncpg.Record],
    leaves: list[bytes],
    previous: bytes,
    key: bytes | None,
    kept: Checkpoint | None,
) -> bytes:
    """A checkpoint against its events, the previous checkpoint, its MAC and the tenant's copy;
    returns its hash."""
    span = f"events {events[0]['id']}..{events[-1]['id']}" if events else "no events"
    if cp is None:
        raise Broken(
            f"events claim checkpoint {seq}, which does not exist", event=events[0]["id"], checkpoint=seq
        )
    root = merkle.root(leaves)
    if kept is not None and (root.hex() != kept.root or len(leaves) != kept.tree_size):
        raise Broken(
            f"checkpoint {seq} ({span}): the events do not hash to the root the tenant kept: "
            "events were altered, added or removed",
            checkpoint=seq,
        )
    if len(leaves) != cp["tree_size"]:
        raise Broken(
            f"checkpoint {seq} holds {cp['tree_size']} events but {len(leaves)} are there: "
            "events were removed",
            checkpoint=seq,
        )
    if events and (events[0]["id"] != cp["first_event_id"] or events[-1]["id"] != cp["last_event_id"]):
        raise Broken(
            f"checkpoint {seq}: first/last event ids differ from its events ({span})", checkpoint=seq
        )
    if root != bytes(cp["root"]):
        raise Broken(f"checkpoint {seq} ({span}): the events do not hash to its root", checkpoint=seq)
    body = body_of(cp)
    if kept is not None and kept.body() != body:
        raise Broken(
            f"checkpoint {seq} differs from the copy the tenant kept: it was rewritten", checkpoint=seq
        )
    if bytes(cp["previous"]) != previous:
        raise Broken(
            f"checkpoint {seq} does not name the previous checkpoint's hash: the chain is broken",
            checkpoint=seq,
        )
    if key is not None and body_mac(key, body) != bytes(cp["mac"]):
        raise Broken(f"checkpoint {seq} has a wrong MAC: it was made without the key", checkpoint=seq)
    return body_hash(body)


async def _verify_sealed(
    conn: Conn,
    queries: Queries,
    tenant_id: int,
    key: bytes | None,
    kept: dict[int, Checkpoint],
) -> tuple[int, int, bytes | None]:
    """(events, checkpoints, head hash) or Broken at the first problem."""
    checkpoints = _checkpoints(conn, queries, tenant_id)
    events = _sealed(conn, queries, tenant_id)
    next_event = await anext(events, None)
    previous, count, seq, head = GENESIS, 0, 0, None
    async for cp in checkpoints:
        seq += 1
        if cp["seq"] != seq:
            raise Broken(f"checkpoint {seq} is missing (the next one is {cp['seq']})", checkpoint=seq)
        if next_event is not None and next_event["checkpoint_seq"] < seq:
            raise Broken(
                f"events claim checkpoint {next_event['checkpoint_seq']}, which does not exist",
                event=next_event["id"],
                checkpoint=next_event["checkpoint_seq"],
            )
        group: list[asyncpg.Record] = []
        leaves: list[bytes] = []
        while next_event is not None and next_event["checkpoint_seq"] == seq:
            leaves.append(_check_event(next_event, len(group), group[-1]["id"] if group else None, key))
            group.append(next_event)
            next_event = await anext(events, None)
        head = previous = _check_checkpoint(cp, seq, group, leaves, previous, key, kept.get(seq))
        count += len(group)
    if next_event is not None:
        raise Broken(
            f"events claim checkpoint {next_event['checkpoint_seq']}, which does not exist",
            event=next_event["id"],
            checkpoint=next_event["checkpoint_seq"],
        )
    missing = sorted(s for s in kept if s > seq)
    if missing:
        raise Broken(
            f"checkpoint {missing[0]} the tenant kept is not in the database: "
            "the newest checkpoints were removed",
            checkpoint=missing[0],
        )
    return count, seq, head


async def verify_ledger(
    conn: Conn,
    queries: Queries,
    tenant_id: int,
    *,
    key: bytes | None = None,
    kept: dict[int, Checkpoint] | None = None,
) -> VerifyResult:
    """Verify one tenant's ledger in one consistent snapshot (a running sealer does not disturb it)."""
    kept = kept or {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        unsealed = await conn.fetchrow(queries.ledger_unsealed_summary, tenant_id)
        assert unsealed is not None
        base: dict[str, Any] = {
            "unsealed": unsealed["unsealed"],
            "oldest_unsealed": unsealed["oldest"],
            "key_checked": key is not None,
            "kept_checked": len(kept),
        }
        legacy = 0
        try:
            legacy = await _verify_legacy(conn, queries, tenant_id)
            events, checkpoints, head = await _verify_sealed(conn, queries, tenant_id, key, kept)
            if unsealed["below_settled"] is not None:
                raise Broken(
                    "the event is not sealed but its id is below the settled mark, which the sealer "
                    "never reads again: it was inserted with an old id, or its seal was removed",
                    event=unsealed["below_settled"],
                )
        except Broken as broken:
            return VerifyResult(
                ok=False,
                events=0,
                checkpoints=0,
                legacy_events=legacy,
                first_bad_event=broken.event,
                first_bad_checkpoint=broken.checkpoint,
                problem=broken.problem,
                **base,
            )
    return VerifyResult(
        ok=True,
        events=events,
        checkpoints=checkpoints,
        head=None if head is None else head.hex(),
        legacy_events=legacy,
        **base,
    )


# -- the legacy per-lane chains of migration 0004 (frozen since 0008) ------------------------------


def _legacy_line(row: asyncpg.Record) -> bytes:
    fields = [str(row["lane"]), str(row["seq"]), *event_fields(row), bytes(row["personal_hash"]).hex()]
    return "\x1f".join(fields).encode()


async def _verify_legacy(conn: Conn, queries: Queries, tenant_id: int) -> int:
    """Every legacy chain re-derived: lane, seq 1..n, prev_hash links, hashes, heads."""
    heads = {
        r["lane"]: (r["last_seq"], bytes(r["last_hash"]))
        for r in await conn.fetch(queries.ledger_head, tenant_id)
    }
    lanes = sorted(set(heads) | {r["lane"] for r in await conn.fetch(queries.ledger_lanes_in_use, tenant_id)})
    total = 0
    for lane in lanes:
        previous, expected, after = GENESIS, 1, 0
        while True:
            rows = await conn.fetch(queries.ledger_events_for_verify, tenant_id, lane, after, PAGE)
            for row in rows:
                where = f"legacy chain {lane} seq {row['seq']}"
                if bytes(row["address_hash"])[0] % LANES != lane:
                    raise Broken(f"{where}: the event sits in another recipient's chain", event=row["id"])
                if row["seq"] != expected or bytes(row["prev_hash"]) != previous:
                    raise Broken(
                        f"{where}: events before it were removed, reordered or altered", event=row["id"]
                    )
                personal = row["personal_text"]
                if personal is not None and hashlib.sha256(personal.encode()).digest() != bytes(
                    row["personal_hash"]
                ):
                    raise Broken(f"{where}: personal fields were altered", event=row["id"])
                digest = hashlib.sha256(previous + _legacy_line(row)).digest()
                if digest != bytes(row["hash"]):
                    raise Broken(f"{where}: the event was altered", event=row["id"])
                previous, expected = digest, expected + 1
            if len(rows) < PAGE:
                break
            after = rows[-1]["seq"]
        if (expected - 1, previous) != heads.get(lane, (0, GENESIS)):
            raise Broken(f"legacy chain {lane} does not end at its head: its newest events were removed")
        total += expected - 1
    return total
