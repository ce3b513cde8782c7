"""The evidence ledger's formats: an event's canonical line, a checkpoint's signed body, the
checkpoint key, and inclusion proofs (docs/ledger.md describes each byte).

Appending an event is a plain insert. The sealer (sealer.py) closes a tenant's unsealed events into
its next checkpoint: a Merkle tree (merkle.py, RFC 9162) over their canonical lines in event-id
order, whose body names the previous checkpoint's hash and is MACed with a key derived from
SUPPRESS_SECRET. Personal fields stay outside the line (their hash is inside), so erasure keeps
every checkpoint verifiable. verifier.py checks all of it; tenants check proofs with only hashlib.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from suppress import merkle
from suppress.config import derive_key
from suppress.sql import Queries

LINE_VERSION = "v2"  # v1 was the per-lane hash chain of migration 0004
BODY_HEADER = "suppress ledger checkpoint v1"
KEY_PURPOSE = "suppress ledger checkpoint key v1"
GENESIS = bytes(32)
WEBHOOK_EVENT = "ledger.checkpoint"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A row with named columns: an asyncpg Record, or a dict of the same fields.
Row: TypeAlias = "Mapping[str, Any] | asyncpg.Record"
Conn: TypeAlias = "asyncpg.Connection | PoolConnectionProxy[Any]"
_MICROSECOND = timedelta(microseconds=1)


def ledger_key(secret: str) -> bytes:
    """The checkpoint MAC key, derived from SUPPRESS_SECRET (the database never holds it)."""
    return derive_key(secret, KEY_PURPOSE)


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch, as lines and bodies record times."""
    return (moment - _EPOCH) // _MICROSECOND


def personal_hash(personal_text: str | None) -> bytes:
    """SHA-256 of an event's personal fields as jsonb text (`{}` when it has none)."""
    return hashlib.sha256((personal_text if personal_text is not None else "{}").encode()).digest()


def canonical_line(row: Row, personal: bytes | None = None) -> bytes:
    """The text a leaf hashes: every field of the event but the personal ones, whose hash stands in.

    `row` has the event's columns and `data_text` (data as PostgreSQL's jsonb text); `personal`
    overrides the row's personal_hash (the sealer computes it)."""
    digest = personal if personal is not None else bytes(row["personal_hash"])
    return "\x1f".join([LINE_VERSION, *event_fields(row), digest.hex()]).encode()


def event_fields(row: Row) -> list[str]:
    """The event's own fields as the canonical lines write them (this line and the legacy one)."""
    return [
        str(row["tenant_id"]),
        str(row["id"]),
        row["channel"],
        bytes(row["address_hash"]).hex(),
        row["kind"],
        "" if row["topic_id"] is None else str(row["topic_id"]),
        "" if row["campaign_id"] is None else str(row["campaign_id"]),
        row["source"],
        row["actor"] or "",
        str(micros(row["occurred_at"])),
        str(micros(row["recorded_at"])),
        row["data_text"],
    ]


def leaf_mac(key: bytes, tenant_id: int, checkpoint_seq: int, index: int, leaf: bytes) -> bytes:
    """The per-leaf MAC that lets the key holder name a rewritten event exactly."""
    label = f"suppress ledger leaf v1\n{tenant_id}\n{checkpoint_seq}\n{index}\n".encode()
    return hmac.new(key, label + leaf, hashlib.sha256).digest()


def leaf_macs(key: bytes, tenant_id: int, checkpoint_seq: int, leaves: list[bytes]) -> list[bytes]:
    """leaf_mac of each leaf of one checkpoint, in leaf order (the key is set up once)."""
    keyed = hmac.new(key, digestmod=hashlib.sha256)
    prefix = f"suppress ledger leaf v1\n{tenant_id}\n{checkpoint_seq}\n"
    macs = []
    for index, leaf in enumerate(leaves):
        mac = keyed.copy()
        mac.update(f"{prefix}{index}\n".encode() + leaf)
        macs.append(mac.digest())
    return macs


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """One sealed batch of a tenant's events, as the API and webhooks hand it out (hex hashes)."""

    tenant: int
    seq: int
    tree_size: int
    first_event_id: int
    last_event_id: int
    root: str
    previous: str
    created_at: datetime
    hash: str
    mac: str

    def body(self) -> bytes:
        """The signed body this checkpoint's MAC and hash are over."""
        return checkpoint_body(
            self.tenant,
            self.seq,
            self.tree_size,
            self.first_event_id,
            self.last_event_id,
            bytes.fromhex(self.root),
            bytes.fromhex(self.previous),
            self.created_at,
        )


class CheckpointPage(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/ledger/checkpoints: checkpoints in order; ask again with `after=next_after`."""

    items: list[Checkpoint]
    next_after: int | None


def checkpoint_body(
    tenant_id: int,
    seq: int,
    tree_size: int,
    first_event_id: int,
    last_event_id: int,
    root: bytes,
    previous: bytes,
    created_at: datetime,
) -> bytes:
    """The exact bytes a checkpoint's MAC and hash cover."""
    return (
        f"{BODY_HEADER}\ntenant {tenant_id}\nseq {seq}\ntree_size {tree_size}\n"
        f"first_event_id {first_event_id}\nlast_event_id {last_event_id}\nroot {root.hex()}\n"
        f"previous {previous.hex()}\ncreated_at {micros(created_at)}\n"
    ).encode()


def body_of(row: Row) -> bytes:
    """The signed body of a ledger_checkpoints row."""
    return checkpoint_body(
        row["tenant_id"],
        row["seq"],
        row["tree_size"],
        row["first_event_id"],
        row["last_event_id"],
        bytes(row["root"]),
        bytes(row["previous"]),
        row["created_at"],
    )


def body_hash(body: bytes) -> bytes:
    """A checkpoint's hash: what the next checkpoint names as `previous`."""
    return hashlib.sha256(body).digest()


def body_mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def checkpoint_out(row: Row) -> Checkpoint:
    """A ledger_checkpoints row as handed out."""
    return Checkpoint(
        tenant=row["tenant_id"],
        seq=row["seq"],
        tree_size=row["tree_size"],
        first_event_id=row["first_event_id"],
        last_event_id=row["last_event_id"],
        root=bytes(row["root"]).hex(),
        previous=bytes(row["previous"]).hex(),
        created_at=row["created_at"],
        hash=body_hash(body_of(row)).hex(),
        mac=bytes(row["mac"]).hex(),
    )


async def list_checkpoints(
    pool: asyncpg.Pool, queries: Queries, tenant_id: int, after: int, limit: int
) -> CheckpointPage:
    """A page of a tenant's checkpoints with seq > after, oldest first."""
    rows = await pool.fetch(queries.ledger_checkpoints_after, tenant_id, after, limit + 1)
    items = [checkpoint_out(r) for r in rows[:limit]]
    return CheckpointPage(items=items, next_after=items[-1].seq if len(rows) > limit else None)


async def inclusion_proofs(
    conn: Conn, queries: Queries, tenant_id: int, event_ids: list[int]
) -> dict[int, dict[str, Any]]:
    """Per event id, its inclusion proof (RFC 9162 audit path) in its checkpoint, or `sealed: false`."""
    rows = await conn.fetch(queries.ledger_events_by_id, tenant_id, event_ids)
    out: dict[int, dict[str, Any]] = {i: {"sealed": False} for i in event_ids}
    leaves_of: dict[int, list[bytes]] = {}
    roots: dict[int, bytes] = {}
    for row in rows:
        seq = row["checkpoint_seq"]
        if seq is None:
            continue
        if seq not in leaves_of:
            leaves_of[seq] = [
                bytes(r["leaf_hash"]) for r in await conn.fetch(queries.ledger_leaves, tenant_id, seq)
            ]
            checkpoint = await conn.fetchrow(queries.ledger_checkpoint, tenant_id, seq)
            roots[seq] = b"" if checkpoint is None else bytes(checkpoint["root"])
        leaves = leaves_of[seq]
        index = row["leaf_index"]
        out[row["id"]] = {
            "sealed": True,
            "checkpoint_seq": seq,
            "checkpoint_root": roots[seq].hex(),
            "tree_size": len(leaves),
            "leaf_index": index,
            "line": canonical_line(row).decode(),
            "audit_path": [h.hex() for h in merkle.audit_path(index, leaves)],
        }
    return out
