"""The sealed ledger: plain appends, sealed into MACed checkpoints, verified independently, and
broken by every kind of tampering — including a rewrite that recomputed every hash."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress import merkle
from suppress.config import ENV_VARS
from suppress.ledger import (
    GENESIS,
    body_hash,
    body_mac,
    canonical_line,
    checkpoint_body,
    leaf_mac,
    ledger_key,
    personal_hash,
)
from suppress.sealer import Sealed, seal_tenant
from suppress.sql import Queries
from suppress.verifier import VerifyResult, load_kept, verify_ledger
from tests.conftest import TEST_SECRET, Tenant, post_json
from tests.support import consent, customer, suppress

Client = AsyncTestClient[Litestar]
KEY = ledger_key(TEST_SECRET)


async def some_history(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "a@example.no", evidence={"ip": "192.0.2.1"}, notice_version="v1")
    await suppress(client, tenant, "b@example.no", "manual", note="asked on the phone")
    await customer(client, tenant, "c@example.no", "purchase")
    await post_json(client, tenant, "/v1/consents/withdraw", {"channel": "email", "address": "a@example.no"})
    await consent(client, tenant, "a@example.no", notice_version="v2")


async def seal(db: asyncpg.Connection, queries: Queries, tenant: Tenant) -> list[Sealed]:
    return await seal_tenant(db, queries, KEY, tenant.id)


async def verify(
    db: asyncpg.Connection, queries: Queries, tenant: Tenant, *, key: bytes | None = KEY, kept: Any = None
) -> VerifyResult:
    return await verify_ledger(db, queries, tenant.id, key=key, kept=kept)


async def unsealed_count(db: asyncpg.Connection, tenant_id: int) -> int:
    """Events of the tenant without a seal row."""
    count: int = await db.fetchval(
        "SELECT count(*) FROM events e WHERE tenant_id = $1"
        " AND NOT EXISTS (SELECT 1 FROM event_seals s WHERE s.tenant_id = e.tenant_id AND s.event_id = e.id)",
        tenant_id,
    )
    return count


async def two_checkpoints(db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries) -> None:
    await some_history(client, tenant)
    assert len(await seal(db, queries, tenant)) == 1
    await suppress(client, tenant, "d@example.no", "manual")
    await consent(client, tenant, "e@example.no")
    assert len(await seal(db, queries, tenant)) == 1


async def test_appends_are_plain_and_sealed_into_verifiable_checkpoints(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    await some_history(client, tenant)
    events = await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id)
    unsealed = await verify(db, queries, tenant)
    assert unsealed.ok and unsealed.unsealed == events and unsealed.checkpoints == 0
    [sealed] = await seal(db, queries, tenant)
    assert sealed.checkpoint.seq == 1 and sealed.checkpoint.tree_size == events
    assert await seal(db, queries, tenant) == []  # nothing left
    result = await verify(db, queries, tenant)
    assert (
        result.ok
        and result.events == events
        and result.unsealed == 0
        and result.head == sealed.checkpoint.hash
    )
    rows = await db.fetch(
        "SELECT e.id, e.lane, e.seq, e.prev_hash, e.hash, s.checkpoint_seq, s.leaf_index FROM events e"
        " LEFT JOIN event_seals s ON s.tenant_id = e.tenant_id AND s.event_id = e.id"
        " WHERE e.tenant_id = $1 ORDER BY e.id",
        tenant.id,
    )
    assert all(
        r["lane"] is None and r["seq"] is None and r["hash"] is None for r in rows
    )  # no chain at insert
    assert [(r["checkpoint_seq"], r["leaf_index"]) for r in rows] == [(1, i) for i in range(events)]


async def test_personal_fields_live_apart_and_hashed(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    await suppress(client, tenant, "note@example.no", "manual", note="called support")
    row = await db.fetchrow("SELECT data, personal FROM events WHERE tenant_id = $1", tenant.id)
    assert row is not None and "note" not in row["data"] and "called support" in row["personal"]
    await seal(db, queries, tenant)
    row = await db.fetchrow(
        "SELECT s.personal_hash = sha256(convert_to(e.personal::text, 'UTF8')) AS ok FROM events e"
        " JOIN event_seals s ON s.tenant_id = e.tenant_id AND s.event_id = e.id WHERE e.tenant_id = $1",
        tenant.id,
    )
    assert row is not None and row["ok"]


async def test_only_rows_with_personal_keys_call_the_safety_net(
    db: asyncpg.Connection, tenant: Tenant
) -> None:
    when = await db.fetchval(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'events_split_personal'"
    )
    assert "WHEN" in when and "ledger_personal_keys()" in when
    assert await db.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = 'events_ledger_append'") == 0
    # a writer that fills `personal` itself keeps it as written, merged with any stray personal key
    await db.execute(
        """INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at, data, personal)
           VALUES ($1, 'email', '\\x01', 'consent_given', 'api', now(), '{"topic": 1}', '{"ip": "192.0.2.9"}'),
                  ($1, 'email', '\\x02', 'consent_given', 'api', now(), '{"note": "x"}', '{"ip": "192.0.2.8"}')""",
        tenant.id,
    )
    rows = await db.fetch("SELECT data, personal FROM events WHERE tenant_id = $1 ORDER BY id", tenant.id)
    assert [json.loads(r["data"]) for r in rows] == [{"topic": 1}, {}]
    assert [json.loads(r["personal"]) for r in rows] == [
        {"ip": "192.0.2.9"},
        {"ip": "192.0.2.8", "note": "x"},
    ]


Tamper = Callable[[asyncpg.Connection, int], Awaitable[None]]

# The seal of the first event of the first checkpoint, and that event.
FIRST_SEAL = "tenant_id = $1 AND checkpoint_seq = 1 AND leaf_index = 0"
FIRST = f"tenant_id = $1 AND id = (SELECT event_id FROM event_seals WHERE {FIRST_SEAL})"
# The seal of the last event of the second checkpoint.
NEWEST_SEAL = (
    "tenant_id = $1 AND checkpoint_seq = 2"
    " AND leaf_index = (SELECT tree_size - 1 FROM ledger_checkpoints WHERE tenant_id = $1 AND seq = 2)"
)


async def _alter_data(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f'UPDATE events SET data = data || \'{{"reason": "forged"}}\' WHERE {FIRST}', t)


async def _alter_kind(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"UPDATE events SET kind = 'consent_withdrawn' WHERE {FIRST}", t)


async def _alter_time(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"UPDATE events SET occurred_at = occurred_at - interval '1 day' WHERE {FIRST}", t)


async def _alter_source(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"UPDATE events SET source = 'import' WHERE {FIRST}", t)


async def _alter_personal(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f'UPDATE events SET personal = \'{{"ip": "198.51.100.7"}}\' WHERE {FIRST}', t)


async def _move(db: asyncpg.Connection, t: int) -> None:
    # into the second checkpoint, after its last leaf
    await db.execute(
        "UPDATE event_seals SET checkpoint_seq = 2, leaf_index = (SELECT tree_size FROM ledger_checkpoints"
        f" WHERE tenant_id = $1 AND seq = 2) WHERE {FIRST_SEAL}",
        t,
    )


async def _unseal(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"DELETE FROM event_seals WHERE {FIRST_SEAL}", t)


async def _delete_first(db: asyncpg.Connection, t: int) -> None:
    # the event and its seal: the leaves after it move up
    await db.execute(f"DELETE FROM events WHERE {FIRST}", t)
    await db.execute(f"DELETE FROM event_seals WHERE {FIRST_SEAL}", t)


async def _delete_first_event_only(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"DELETE FROM events WHERE {FIRST}", t)


async def _delete_newest(db: asyncpg.Connection, t: int) -> None:
    await db.execute(
        f"DELETE FROM events WHERE tenant_id = $1 AND id = (SELECT event_id FROM event_seals WHERE {NEWEST_SEAL})",
        t,
    )
    await db.execute(f"DELETE FROM event_seals WHERE {NEWEST_SEAL}", t)


async def _swap(db: asyncpg.Connection, t: int) -> None:
    for from_, to in ((0, 1_000_000), (1, 0), (1_000_000, 1)):
        await db.execute(
            "UPDATE event_seals SET leaf_index = $3 WHERE tenant_id = $1 AND checkpoint_seq = 1 AND leaf_index = $2",
            t,
            from_,
            to,
        )


async def _insert_forged(db: asyncpg.Connection, t: int) -> None:
    # a forged event slipped into a sealed checkpoint with plausible but wrong hashes
    await db.execute(
        """WITH forged AS (
               INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at, data)
               VALUES ($1, 'email', '\\x00', 'consent_given', 'api', now(), '{}') RETURNING tenant_id, id
           )
           INSERT INTO event_seals (tenant_id, event_id, checkpoint_seq, leaf_index, leaf_hash, leaf_mac, personal_hash)
           SELECT f.tenant_id, f.id, 1, c.tree_size, sha256('x'::bytea), sha256('y'::bytea), sha256(''::bytea)
           FROM forged f JOIN ledger_checkpoints c ON c.tenant_id = f.tenant_id AND c.seq = 1""",
        t,
    )


async def _alter_root(db: asyncpg.Connection, t: int) -> None:
    await db.execute(
        "UPDATE ledger_checkpoints SET root = sha256('other'::bytea) WHERE tenant_id = $1 AND seq = 1", t
    )


async def _delete_newest_checkpoint(db: asyncpg.Connection, t: int) -> None:
    await db.execute("DELETE FROM ledger_checkpoints WHERE tenant_id = $1 AND seq = 2", t)


async def _break_chain(db: asyncpg.Connection, t: int) -> None:
    await db.execute(
        "UPDATE ledger_checkpoints SET previous = sha256('x'::bytea) WHERE tenant_id = $1 AND seq = 2", t
    )


@pytest.mark.parametrize(
    ("tamper", "bad_checkpoint", "names_event"),
    [
        (_alter_data, 1, True),
        (_alter_kind, 1, True),
        (_alter_time, 1, True),
        (_alter_source, 1, True),
        (_alter_personal, 1, True),
        (_move, 1, True),
        (_unseal, 1, True),
        (_delete_first, 1, True),
        (_delete_first_event_only, 1, True),
        (_delete_newest, 2, False),
        (_swap, 1, True),
        (_insert_forged, 1, True),
        (_alter_root, 1, False),
        (_delete_newest_checkpoint, 2, True),
        (_break_chain, 2, False),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
async def test_every_kind_of_tampering_is_found(
    db: asyncpg.Connection,
    client: Client,
    tenant: Tenant,
    queries: Queries,
    tamper: Tamper,
    bad_checkpoint: int,
    names_event: bool,
) -> None:
    await two_checkpoints(db, client, tenant, queries)
    assert (await verify(db, queries, tenant)).ok
    await tamper(db, tenant.id)
    result = await verify(db, queries, tenant, key=None)  # none of these needs the key
    assert not result.ok and result.problem, result
    assert result.first_bad_checkpoint == bad_checkpoint, result
    assert (result.first_bad_event is not None) == names_event, result


async def _rewrite_and_rehash(db: asyncpg.Connection, queries: Queries, tenant_id: int) -> int:
    """What a database writer without the key can do at best: change an event's source and time,
    then recompute its leaf, its checkpoint's root and body, and every later checkpoint's link."""
    event_id: int = await db.fetchval(f"SELECT id FROM events WHERE {FIRST}", tenant_id)
    await db.execute(
        "UPDATE events SET source = 'paper_form', occurred_at = occurred_at - interval '400 days'"
        " WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        event_id,
    )
    previous = bytes(32)
    for cp in await db.fetch("SELECT * FROM ledger_checkpoints WHERE tenant_id = $1 ORDER BY seq", tenant_id):
        rows = await db.fetch(
            "SELECT e.tenant_id, e.id, e.channel, e.address_hash, e.kind, e.topic_id, e.campaign_id, e.source,"
            " e.actor, e.occurred_at, e.recorded_at, e.data::text AS data_text, s.personal_hash FROM events e"
            " JOIN event_seals s ON s.tenant_id = e.tenant_id AND s.event_id = e.id"
            " WHERE e.tenant_id = $1 AND s.checkpoint_seq = $2 ORDER BY s.leaf_index",
            tenant_id,
            cp["seq"],
        )
        leaves = [merkle.leaf_hash(canonical_line(r)) for r in rows]
        for r, leaf in zip(rows, leaves, strict=True):
            await db.execute(
                "UPDATE event_seals SET leaf_hash = $3 WHERE tenant_id = $1 AND event_id = $2",
                tenant_id,
                r["id"],
                leaf,
            )
        root = merkle.root(leaves)
        await db.execute(
            "UPDATE ledger_checkpoints SET root = $3, previous = $4 WHERE tenant_id = $1 AND seq = $2",
            tenant_id,
            cp["seq"],
            root,
            previous,
        )
        previous = body_hash(
            checkpoint_body(
                tenant_id,
                cp["seq"],
                cp["tree_size"],
                cp["first_event_id"],
                cp["last_event_id"],
                root,
                previous,
                cp["created_at"],
            )
        )
    return event_id


async def test_a_rewrite_with_every_hash_recomputed_is_caught_by_mac_and_by_kept_checkpoints(
    db: asyncpg.Connection,
    client: Client,
    tenant: Tenant,
    queries: Queries,
    tmp_path: Path,
    database_url: str,
) -> None:
    await two_checkpoints(db, client, tenant, queries)
    response = await client.get("/v1/ledger/checkpoints", headers=tenant.auth("read"))
    assert response.status_code == 200, response.text
    kept_file = tmp_path / "kept.json"
    kept_file.write_text(response.text)
    kept = load_kept(kept_file.read_bytes())
    assert (await verify(db, queries, tenant, kept=kept)).ok
    event_id = await _rewrite_and_rehash(db, queries, tenant.id)
    # without the key or a kept checkpoint the rewrite is consistent: that is the threat model
    assert (await verify(db, queries, tenant, key=None)).ok
    with_key = await verify(db, queries, tenant)
    assert not with_key.ok and with_key.first_bad_event == event_id and "MAC" in (with_key.problem or ""), (
        with_key
    )
    with_kept = await verify(db, queries, tenant, key=None, kept=kept)
    assert not with_kept.ok and with_kept.first_bad_checkpoint == 1 and "kept" in (with_kept.problem or "")
    # the same through the command line
    no_secret = {"SUPPRESS_SECRET": ""}
    by_mac = _cli("ledger", "verify", "--tenant", tenant.name, database_url=database_url)
    assert by_mac.returncode == 1 and f"event {event_id} (checkpoint 1)" in by_mac.stderr, by_mac
    by_file = _cli(
        "ledger",
        "verify",
        "--tenant",
        tenant.name,
        "--checkpoints",
        str(kept_file),
        database_url=database_url,
        env=no_secret,
    )
    assert by_file.returncode == 1 and "checkpoint 1" in by_file.stderr and "kept" in by_file.stderr, by_file
    blind = _cli("ledger", "verify", "--tenant", tenant.name, database_url=database_url, env=no_secret)
    assert blind.returncode == 0 and "warning" in blind.stderr, blind


async def test_two_sealers_at_once_never_fork_and_seal_each_event_once(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries, database_url: str
) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(4)]
    try:
        for round_ in range(5):
            writes = [suppress(client, tenant, f"r{round_}-{i}@example.no", "manual") for i in range(12)]
            seals = [seal_tenant(c, queries, KEY, tenant.id) for c in conns]
            await asyncio.gather(*writes, *seals)
        while await seal(db, queries, tenant):
            pass
    finally:
        for c in conns:
            await c.close()
    seqs = [
        r["seq"]
        for r in await db.fetch(
            "SELECT seq FROM ledger_checkpoints WHERE tenant_id = $1 ORDER BY seq", tenant.id
        )
    ]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 1
    assert await unsealed_count(db, tenant.id) == 0
    assert (
        await db.fetchval("SELECT sum(tree_size) FROM ledger_checkpoints WHERE tenant_id = $1", tenant.id)
        == 60
    )
    result = await verify(db, queries, tenant)
    assert result.ok and result.events == 60, result


async def test_an_event_committed_late_with_a_lower_id_is_still_sealed(
    db: asyncpg.Connection, tenant: Tenant, queries: Queries, database_url: str
) -> None:
    insert = """INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at)
                VALUES ($1, 'email', $2, 'consent_given', 'api', now()) RETURNING id"""
    late = await asyncpg.connect(database_url)
    try:
        tx = late.transaction()
        await tx.start()
        late_id = await late.fetchval(insert, tenant.id, b"\x01")
        early_id = await db.fetchval(insert, tenant.id, b"\x02")
        assert late_id < early_id
        [first] = await seal(db, queries, tenant)
        assert (first.checkpoint.first_event_id, first.checkpoint.tree_size) == (early_id, 1)
        await tx.commit()
    finally:
        await late.close()
    [second] = await seal(db, queries, tenant)
    assert (second.checkpoint.first_event_id, second.checkpoint.tree_size) == (late_id, 1)
    assert (await verify(db, queries, tenant)).ok


async def test_erasure_after_sealing_keeps_the_ledger_verifiable(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    await some_history(client, tenant)
    await seal(db, queries, tenant)
    response = await client.post("/v1/recipients/email/a@example.no/erase", headers=tenant.auth("admin"))
    assert response.status_code == 200, response.text
    assert (
        await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND personal IS NOT NULL AND kind = 'consent_given'",
            tenant.id,
        )
        == 0
    )
    await seal(db, queries, tenant)
    result = await verify(db, queries, tenant)
    assert result.ok and result.unsealed == 0 and result.checkpoints == 2, result


async def test_events_of_every_write_path_end_up_sealed(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    await some_history(client, tenant)
    await customer(client, tenant, "c@example.no", "agreement_started", ref="C-2")
    await post_json(client, tenant, "/v1/customers/C-2/object", {})
    await post_json(client, tenant, "/v1/recipients/email/b@example.no/restrict", {"note": "disputed"})
    response = await client.delete("/v1/suppressions/email/b@example.no", headers=tenant.auth("admin"))
    assert response.status_code < 300, response.text
    await post_json(client, tenant, "/v1/recipients/email/a@example.no/erase", {})
    kinds = {
        r["kind"] for r in await db.fetch("SELECT DISTINCT kind FROM events WHERE tenant_id = $1", tenant.id)
    }
    assert len(kinds) >= 6, kinds
    await seal(db, queries, tenant)
    assert await unsealed_count(db, tenant.id) == 0
    assert (await verify(db, queries, tenant)).ok


async def test_checkpoints_api_pages_and_refuses_bad_input(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    for i in range(3):
        await suppress(client, tenant, f"p{i}@example.no", "manual")
        await seal(db, queries, tenant)
    first = (await client.get("/v1/ledger/checkpoints?limit=2", headers=tenant.auth("read"))).json()
    assert [c["seq"] for c in first["items"]] == [1, 2] and first["next_after"] == 2
    rest = (await client.get("/v1/ledger/checkpoints?after=2", headers=tenant.auth("read"))).json()
    assert [c["seq"] for c in rest["items"]] == [3] and rest["next_after"] is None
    assert rest["items"][0]["previous"] == first["items"][1]["hash"]
    for bad in ("after=-1", "limit=0", "limit=5000", "after=x"):
        response = await client.get(f"/v1/ledger/checkpoints?{bad}", headers=tenant.auth("read"))
        assert response.status_code == 400 and response.json()["code"] == "invalid_parameter", bad
    assert (await client.get("/v1/ledger/checkpoints", headers=tenant.auth("check"))).status_code == 403
    assert (await client.get("/v1/ledger/checkpoints")).status_code == 401


def _verifier_from_docs() -> Callable[..., bool]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "ledger.md").read_text()
    [snippet] = [
        block.split("```")[0] for block in text.split("```python\n")[1:] if "def verify_proof(" in block
    ]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    verify_proof: Callable[..., bool] = namespace["verify_proof"]
    return verify_proof


async def test_access_export_proofs_verify_with_the_documented_verifier(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    verify_proof = _verifier_from_docs()
    await some_history(client, tenant)
    for i in range(6):  # a tree of uneven size with a@example.no's events spread in it
        await suppress(client, tenant, f"other{i}@example.no", "manual")
    await seal(db, queries, tenant)
    await consent(client, tenant, "a@example.no", topic=None, notice_version="v3")  # not sealed yet
    kept = (await client.get("/v1/ledger/checkpoints", headers=tenant.auth("read"))).json()["items"]
    export = (
        await client.get("/v1/recipients/email/a@example.no/export", headers=tenant.auth("read"))
    ).json()
    sealed = [e for e in export["events"] if e["ledger"]["sealed"]]
    unsealed = [e for e in export["events"] if not e["ledger"]["sealed"]]
    assert len(sealed) >= 3 and unsealed and all(e["ledger"] == {"sealed": False} for e in unsealed)
    assert max(e["id"] for e in sealed) < min(e["id"] for e in unsealed)
    [checkpoint] = kept
    size, root = checkpoint["tree_size"], checkpoint["root"]
    assert size == await db.fetchval(
        "SELECT count(*) FROM event_seals WHERE tenant_id = $1 AND checkpoint_seq = 1", tenant.id
    )
    assert size & (size - 1)  # not a power of two: the uneven split is exercised
    for event in sealed:
        proof = event["ledger"]
        assert proof["tree_size"] == size and proof["checkpoint_root"] == root
        assert proof["line"].split("\x1f")[2] == str(event["id"])
        assert verify_proof(proof, root)
        # the verifier must refuse a proof that is wrong anywhere
        assert not verify_proof({**proof, "line": proof["line"].replace(event["kind"], "forged")}, root)
        assert not verify_proof({**proof, "leaf_index": (proof["leaf_index"] + 1) % size}, root)
        assert not verify_proof(proof, "00" * 32)
        assert not verify_proof({**proof, "audit_path": proof["audit_path"][:-1]}, root)
    customer_export = await client.get("/v1/customers/C-1/export", headers=tenant.auth("read"))
    assert all(e["ledger"]["sealed"] for e in customer_export.json()["addresses"][0]["events"])


async def test_sealing_queues_a_signed_checkpoint_webhook(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    webhook_id = await db.fetchval(
        "INSERT INTO webhooks (tenant_id, url, events, secret_box) VALUES ($1, 'https://example.test/h',"
        " '{ledger.checkpoint}', '\\x00') RETURNING id",
        tenant.id,
    )
    try:
        await suppress(client, tenant, "w@example.no", "manual")  # not a kind this webhook takes
        [sealed] = await seal(db, queries, tenant)
        assert len(sealed.deliveries) == 1
        listing = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=tenant.auth("read"))
        [delivery] = listing.json()["items"]
        assert delivery["type"] == "ledger.checkpoint" and delivery["event_id"] == f"{tenant.id}:checkpoint:1"
    finally:
        await db.execute("UPDATE webhooks SET disabled_at = now() WHERE tenant_id = $1", tenant.id)
        await db.execute("DELETE FROM webhook_deliveries WHERE tenant_id = $1", tenant.id)


def _cli(
    *args: str, database_url: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    run_env = base | {"SUPPRESS_DATABASE_URL": database_url, "SUPPRESS_SECRET": TEST_SECRET} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "suppress.cli", *args],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.e2e  # runs a real process
async def test_cli_seal_head_and_verify_exit_codes(
    db: asyncpg.Connection, client: Client, tenant: Tenant, database_url: str
) -> None:
    await some_history(client, tenant)
    sealed = _cli("ledger", "seal", "--tenant", tenant.name, database_url=database_url)
    assert sealed.returncode == 0 and "checkpoint 1" in sealed.stdout, sealed
    intact = _cli("ledger", "verify", "--tenant", tenant.name, database_url=database_url)
    assert intact.returncode == 0 and "intact" in intact.stdout and "MAC" in intact.stdout, intact
    head = _cli("ledger", "head", "--tenant", str(tenant.id), database_url=database_url)
    assert head.returncode == 0 and json.loads(head.stdout)["checkpoint"]["seq"] == 1
    await _alter_kind(db, tenant.id)
    broken = _cli("ledger", "verify", "--tenant", tenant.name, database_url=database_url)
    event_id = await db.fetchval(f"SELECT id FROM events WHERE {FIRST}", tenant.id)
    assert broken.returncode == 1 and f"event {event_id} (checkpoint 1)" in broken.stderr, broken


async def test_an_existing_chained_ledger_migrates_and_stays_verifiable(
    server_database_url: str, queries: Queries, tmp_path: Path
) -> None:
    from suppress.migrate import migrate, migration_files

    name = f"suppress_ledger_migration_{os.getpid()}"
    admin = await asyncpg.connect(server_database_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = server_database_url.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(url)
    try:
        before = tmp_path / "before"
        before.mkdir()
        for version, _, path in migration_files():
            if version < 8:
                (before / path.name).write_text(path.read_text())
        await migrate(conn, before)
        tenant_id = await conn.fetchval("INSERT INTO tenants (name) VALUES ('old') RETURNING id")
        for i in range(20):  # chained by the 0004 trigger, personal keys split off by it
            await conn.execute(
                """INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at, data)
                   VALUES ($1, 'email', sha256(int4send($2)), 'consent_given', 'api', now(), $3)""",
                tenant_id,
                i,
                json.dumps({"ip": f"192.0.2.{i}", "topic": i}),
            )
        await migrate(conn)
        old = await verify_ledger(conn, queries, tenant_id, key=KEY)
        assert old.ok and old.legacy_events == 20 and old.unsealed == 20 and old.checkpoints == 0, old
        [first] = await seal_tenant(conn, queries, KEY, tenant_id)
        assert first.checkpoint.tree_size == 20
        await conn.execute(
            """INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at, data)
               VALUES ($1, 'email', '\\x01', 'unsubscribed', 'one_click', now(), '{"ip": "192.0.2.99"}')""",
            tenant_id,
        )
        [second] = await seal_tenant(conn, queries, KEY, tenant_id)
        assert second.checkpoint.previous == first.checkpoint.hash
        sealed = await verify_ledger(conn, queries, tenant_id, key=KEY)
        assert sealed.ok and sealed.events == 21 and sealed.legacy_events == 20 and sealed.unsealed == 0, (
            sealed
        )
        # an old event altered now breaks both its legacy chain and its checkpoint
        victim = await conn.fetchval("SELECT min(id) FROM events WHERE tenant_id = $1", tenant_id)
        await conn.execute("UPDATE events SET source = 'import' WHERE id = $1", victim)
        broken = await verify_ledger(conn, queries, tenant_id, key=KEY)
        assert not broken.ok and broken.first_bad_event == victim, broken
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_an_idle_tenant_settles_and_a_forged_event_below_the_mark_is_found(
    db: asyncpg.Connection, client: Client, tenant: Tenant, queries: Queries
) -> None:
    await some_history(client, tenant)
    [sealed] = await seal(db, queries, tenant)
    assert await seal(db, queries, tenant) == []  # nothing to seal; the marks settle
    marks = await db.fetchrow("SELECT * FROM ledger_marks WHERE tenant_id = $1", tenant.id)
    assert marks is not None and marks["settled"] >= marks["sealed_high"] == sealed.checkpoint.last_event_id
    listed = [r["tenant_id"] for r in await db.fetch(queries.ledger_unsealed_tenants)]
    assert tenant.id not in listed  # the sealer no longer reads this tenant's events at all
    # a database writer inserts an event with an old id: the sealer never looks there again
    forged = sealed.checkpoint.first_event_id - 1
    await db.execute(
        """INSERT INTO events (id, tenant_id, channel, address_hash, kind, source, occurred_at)
           OVERRIDING SYSTEM VALUE VALUES ($2, $1, 'email', '\\x05', 'consent_given', 'api', now())""",
        tenant.id,
        forged,
    )
    assert await seal(db, queries, tenant) == []
    result = await verify(db, queries, tenant)
    assert not result.ok and result.first_bad_event == forged and "settled" in (result.problem or ""), result


async def _seal_as_0008(conn: asyncpg.Connection, tenant_id: int, ids: list[int]) -> None:
    """What the 0008 sealer did: checkpoint 1 over these events, written into the events' own columns."""
    rows = await conn.fetch(
        "SELECT *, data::text AS data_text, personal::text AS personal_text FROM events"
        " WHERE tenant_id = $1 AND id = ANY ($2::bigint[]) ORDER BY id",
        tenant_id,
        ids,
    )
    personal = [personal_hash(r["personal_text"]) for r in rows]
    leaves = [merkle.leaf_hash(canonical_line(r, p)) for r, p in zip(rows, personal, strict=True)]
    now = await conn.fetchval("SELECT clock_timestamp()")
    first, last, root = rows[0]["id"], rows[-1]["id"], merkle.root(leaves)
    body = checkpoint_body(tenant_id, 1, len(rows), first, last, root, GENESIS, now)
    await conn.execute(
        "INSERT INTO ledger_checkpoints VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8)",
        tenant_id,
        len(rows),
        first,
        last,
        root,
        GENESIS,
        now,
        body_mac(KEY, body),
    )
    for i, (row, p, leaf) in enumerate(zip(rows, personal, leaves, strict=True)):
        await conn.execute(
            "UPDATE events SET checkpoint_seq = 1, leaf_index = $3, personal_hash = $4, leaf_hash = $5,"
            " leaf_mac = $6 WHERE tenant_id = $1 AND id = $2",
            tenant_id,
            row["id"],
            i,
            p,
            leaf,
            leaf_mac(KEY, tenant_id, 1, i, leaf),
        )


async def test_events_sealed_before_0009_move_to_seals_and_stay_verifiable(
    server_database_url: str, queries: Queries, tmp_path: Path
) -> None:
    from suppress.migrate import migrate, migration_files

    name = f"suppress_ledger_seals_{os.getpid()}"
    admin = await asyncpg.connect(server_database_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = server_database_url.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(url)
    try:
        before = tmp_path / "before"
        before.mkdir()
        for version, _, path in migration_files():
            if version < 9:
                (before / path.name).write_text(path.read_text())
        await migrate(conn, before)
        tenant_id = await conn.fetchval("INSERT INTO tenants (name) VALUES ('sealed') RETURNING id")
        ids = [
            await conn.fetchval(
                """INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at, data)
                   VALUES ($1, 'email', sha256(int4send($2)), 'consent_given', 'api', now(), $3) RETURNING id""",
                tenant_id,
                i,
                json.dumps({"ip": f"192.0.2.{i}", "topic": i}),
            )
            for i in range(10)
        ]
        # ids[3] stands for a late commit the 0008 sealer had not sealed yet; ids[7:] are new
        await _seal_as_0008(conn, tenant_id, ids[:3] + ids[4:7])
        await conn.execute("UPDATE events SET personal = NULL WHERE id = $1", ids[1])  # erased after sealing
        await migrate(conn)
        assert await conn.fetchval("SELECT count(*) FROM event_seals WHERE tenant_id = $1", tenant_id) == 6
        marks = await conn.fetchrow("SELECT * FROM ledger_marks WHERE tenant_id = $1", tenant_id)
        assert marks is not None and (marks["sealed_high"], marks["settled"]) == (ids[6], ids[3] - 1)
        migrated = await verify_ledger(conn, queries, tenant_id, key=KEY)
        assert migrated.ok and migrated.events == 6 and migrated.unsealed == 4, migrated
        [second] = await seal_tenant(conn, queries, KEY, tenant_id)
        assert (second.checkpoint.first_event_id, second.checkpoint.tree_size) == (ids[3], 4)
        sealed = await verify_ledger(conn, queries, tenant_id, key=KEY)
        assert sealed.ok and sealed.events == 10 and sealed.checkpoints == 2 and sealed.unsealed == 0, sealed
        await conn.execute("UPDATE events SET kind = 'unsubscribed' WHERE id = $1", ids[2])
        broken = await verify_ledger(conn, queries, tenant_id, key=KEY)
        assert not broken.ok and broken.first_bad_event == ids[2] and broken.first_bad_checkpoint == 1, broken
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_an_open_transaction_holds_the_settled_mark_below_its_id(
    db: asyncpg.Connection, tenant: Tenant, queries: Queries, database_url: str
) -> None:
    insert = """INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at)
                VALUES ($1, 'email', $2, 'consent_given', 'api', now()) RETURNING id"""
    settled = "SELECT settled FROM ledger_marks WHERE tenant_id = $1"
    late = await asyncpg.connect(database_url)
    try:
        tx = late.transaction()
        await tx.start()
        late_id = await late.fetchval(insert, tenant.id, b"\x01")
        for i in range(3):  # seals keep coming while it is open; none may settle past it
            await db.fetchval(insert, tenant.id, bytes([2 + i]))
            assert len(await seal(db, queries, tenant)) == 1
            assert await db.fetchval(settled, tenant.id) < late_id
        await tx.commit()
    finally:
        await late.close()
    [sealed] = await seal(db, queries, tenant)
    assert (sealed.checkpoint.first_event_id, sealed.checkpoint.tree_size) == (late_id, 1)
    assert await seal(db, queries, tenant) == []  # now it settles past everything
    assert await db.fetchval(settled, tenant.id) >= sealed.checkpoint.last_event_id
    result = await verify(db, queries, tenant)
    assert result.ok and result.unsealed == 0 and result.checkpoints == 4, result
