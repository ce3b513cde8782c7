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
from suppress.ledger import body_hash, canonical_line, checkpoint_body, ledger_key
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
        "SELECT id, lane, seq, prev_hash, hash, checkpoint_seq, leaf_index FROM events WHERE tenant_id = $1"
        " ORDER BY id",
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
        "SELECT personal_hash = sha256(convert_to(personal::text, 'UTF8')) AS ok FROM events WHERE tenant_id = $1",
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

# The first event of the first checkpoint.
FIRST = "tenant_id = $1 AND checkpoint_seq = 1 AND leaf_index = 0"


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
        "UPDATE events SET checkpoint_seq = 2, leaf_index = (SELECT tree_size FROM ledger_checkpoints"
        f" WHERE tenant_id = $1 AND seq = 2) WHERE {FIRST}",
        t,
    )


async def _unseal(db: asyncpg.Connection, t: int) -> None:
    await db.execute(
        f"UPDATE events SET checkpoint_seq = NULL, leaf_index = NULL, leaf_hash = NULL, leaf_mac = NULL WHERE {FIRST}",
        t,
    )


async def _delete_first(db: asyncpg.Connection, t: int) -> None:
    await db.execute(f"DELETE FROM events WHERE {FIRST}", t)


async def _delete_newest(db: asyncpg.Connection, t: int) -> None:
    await db.execute(
        "DELETE FROM events WHERE tenant_id = $1 AND checkpoint_seq = 2"
        " AND leaf_index = (SELECT tree_size - 1 FROM ledger_checkpoints WHERE tenant_id = $1 AND seq = 2)",
        t,
    )


async def _swap(db: asyncpg.Connection, t: int) -> None:
    await db.execute(
        "UPDATE events SET leaf_index = -1 - leaf_index WHERE tenant_id = $1 AND checkpoint_seq = 1 AND leaf_index IN (0, 1)",
        t,
    )
    await db.execute(
        "UPDATE events SET leaf_index = CASE leaf_index WHEN -1 THEN 1 ELSE 0 END"
        " WHERE tenant_id = $1 AND checkpoint_seq = 1 AND leaf_index < 0",
        t,
    )


async def _insert_forged(db: asyncpg.Connection, t: int) -> None:
    # a forged event slipped into a sealed checkpoint with plausible but wrong hashes
    await db.execute(
        """INSERT INTO events (tenant_id, channel, address_hash, kind, source, occurred_at, data, personal_hash,
                               checkpoint_seq, leaf_index, leaf_hash, leaf_mac)
           SELECT $1, 'email', '\\x00', 'consent_given', 'api', now(), '{}', sha256(''::bytea), 1, tree_size,
                  sha256('x'::bytea), sha256('y'::bytea)
           FROM ledger_checkpoints WHERE tenant_id = $1 AND seq = 1""",
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
            "SELECT *, data::text AS data_text FROM events WHERE tenant_id = $1 AND checkpoint_seq = $2"
            " ORDER BY leaf_index",
            tenant_id,
            cp["seq"],
        )
        leaves = [merkle.leaf_hash(canonical_line(r)) for r in rows]
        for r, leaf in zip(rows, leaves, strict=True):
            await db.execute(
                "UPDATE events SET leaf_hash = $3 WHERE tenant_id = $1 AND id = $2", tenant_id, r["id"], leaf
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
    assert (
        await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND checkpoint_seq IS NULL", tenant.id
        )
        == 0
    )
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
    assert (
        await db.fetchval(
            "SELECT count(*) FROM events WHERE tenant_id = $1 AND checkpoint_seq IS NULL", tenant.id
        )
        == 0
    )
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
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND checkpoint_seq = 1", tenant.id
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
