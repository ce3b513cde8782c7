"""The schema shards by tenant: keys lead with tenant_id, foreign keys stay inside a tenant, and
every statement filters on tenant_id (tests/sharding.py holds the checks; docs/scaling.md why).

The schema inspected is the session database, made by applying sql/migrations/ in order to a fresh
database; the statements are every named query in sql/*.sql.
"""

from __future__ import annotations

import asyncpg
import pytest

from suppress.sql import Queries, parse_sql, sql_dir
from tests.sharding import key_problems, statement_problems, tenant_tables

#: Tables that are not distributed by tenant (Citus reference tables or coordinator-only), and why.
GLOBAL_TABLES: dict[str, str] = {
    "tenants": "the tenants themselves; every tenant table's foreign keys point at it",
    "api_keys": "a request is authenticated by the key's hash before its tenant is known",
    "providers": "an inbound provider webhook names its configuration by id alone "
    "(/v1/providers/{kind}/{id}) before the tenant is known; a few rows per tenant",
    "schema_migrations": "the migrations applied: one list for the whole database",
    "dashboard_sessions": "a dashboard request is authenticated by the session cookie's hash before its "
    "tenant is known, like an API key",
}

#: Statements that must run across tenants: sweepers and discovery that find work per tenant, then
#: act on one tenant at a time. Under Citus they fan out to every shard, from workers only.
CROSS_TENANT: dict[str, str] = {
    "tenants_with_stale_effects": "the effects sweeper finds the tenants whose drain is overdue",
    "ledger_unsealed_tenants": "the ledger sealer's discovery: which tenants have events to seal",
    "expired_suppressions": "the expiry job finds due suppressions of every tenant, then lifts them per tenant",
    "due_webhook_deliveries": "the delivery sweeper finds deliveries whose retry time has come",
    "prune_health_counted_events": "the hourly prune forgets counted events of every tenant",
    "stalled_imports": "the resume cron finds imports nobody runs",
    "stale_provider_events": "the provider sweeper re-enqueues acknowledged events still pending",
    "prune_provider_records": "the prune cron drops expired nonces, old events and soft bounces",
}


def named_statements() -> dict[str, str]:
    found: dict[str, str] = {}
    for stem in Queries.files:
        path = sql_dir() / f"{stem}.sql"
        found.update(
            {name: q.text for name, q in parse_sql(path.read_text(encoding="utf-8"), path.name).items()}
        )
    return found


async def test_every_tenant_table_leads_its_keys_with_tenant_id(db: asyncpg.Connection) -> None:
    assert await key_problems(db, GLOBAL_TABLES) == []


async def test_every_statement_filters_on_tenant_id(db: asyncpg.Connection) -> None:
    tenant = await tenant_tables(db) - GLOBAL_TABLES.keys()
    assert {"recipients", "events", "topics", "campaigns", "provider_nonces"} <= tenant
    statements = named_statements()
    assert CROSS_TENANT.keys() <= statements.keys(), "an exempt statement no longer exists"
    problems = {
        name: found
        for name, sql in statements.items()
        if name not in CROSS_TENANT and (found := statement_problems(sql, tenant))
    }
    assert problems == {}
    # The list of exemptions stays honest: each one really does span tenants.
    assert [name for name in CROSS_TENANT if not statement_problems(statements[name], tenant)] == []


async def test_the_key_check_reports_a_migration_that_breaks_the_rules(db: asyncpg.Connection) -> None:
    bad_migration = """
        CREATE SCHEMA shard_rules_demo;
        SET LOCAL search_path = shard_rules_demo;
        CREATE TABLE notes (id bigint PRIMARY KEY, tenant_id integer NOT NULL, body text);
        CREATE TABLE tags (tenant_id integer NOT NULL, name text NOT NULL, PRIMARY KEY (tenant_id, name));
        CREATE UNIQUE INDEX tags_by_name ON tags (name);
        CREATE TABLE links (
            tenant_id integer NOT NULL,
            note_id bigint NOT NULL REFERENCES notes (id),
            PRIMARY KEY (tenant_id, note_id)
        );
        CREATE TABLE audit (id bigint PRIMARY KEY, what text);
        CREATE TABLE good (
            tenant_id integer NOT NULL, name text NOT NULL, note text,
            PRIMARY KEY (tenant_id, name),
            FOREIGN KEY (tenant_id, name) REFERENCES tags (tenant_id, name)
        );
    """
    demo = db.transaction()
    await demo.start()
    try:
        await db.execute(bad_migration)
        problems = await key_problems(db, {}, schema="shard_rules_demo")
    finally:
        await demo.rollback()  # nothing of the demonstration stays
    assert any(p.startswith("notes: unique key notes_pkey does not lead with tenant_id") for p in problems)
    assert any(p.startswith("tags: unique key tags_by_name does not lead") for p in problems)
    assert any(
        p.startswith("links: foreign key") and "to notes does not include tenant_id" in p for p in problems
    )
    assert "audit: no tenant_id and not listed as a global table" in problems
    assert len(problems) == 4, problems  # and nothing about `good`


TENANT = {"recipients", "topics", "campaigns", "events", "suppressions"}


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT address FROM recipients WHERE address_hash = $1", "recipients (recipients) is read"),
        ("UPDATE topics SET name = $2 WHERE id = $1", "topics (topics) is read or changed"),
        ("DELETE FROM suppressions WHERE reason = 'manual'", "suppressions (suppressions)"),
        ("INSERT INTO campaigns (name) VALUES ($1)", "INSERT INTO campaigns does not set tenant_id"),
        (
            "SELECT e.id, t.name FROM events e LEFT JOIN topics t ON t.id = e.topic_id WHERE e.tenant_id = $1",
            "topics (t) is read",
        ),
        (
            "SELECT r.address FROM recipients r JOIN events e ON e.tenant_id = r.tenant_id",
            "no tenant_id is compared with a value",
        ),
        (
            "SELECT * FROM events WHERE tenant_id = $1 AND id IN (SELECT event_id FROM suppressions WHERE reason = $2)",
            "suppressions (suppressions)",
        ),
    ],
)
def test_the_statement_check_reports_a_statement_without_a_tenant_filter(sql: str, expected: str) -> None:
    problems = statement_problems(sql, TENANT)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT address FROM recipients WHERE tenant_id = $1 AND address_hash = $2",
        "SELECT e.id, t.name FROM events e LEFT JOIN topics t ON t.tenant_id = e.tenant_id AND t.id = e.topic_id "
        "WHERE e.tenant_id = $1",
        "INSERT INTO campaigns (tenant_id, name) VALUES ($1, $2)",
        "SELECT r.address FROM recipients r JOIN events e USING (tenant_id, address_hash) WHERE r.tenant_id = $1",
        "SELECT t.name, (SELECT count(*) FROM topics WHERE tenant_id = t.id) FROM tenants t WHERE t.id = $1",
    ],
)
def test_the_statement_check_passes_statements_held_to_one_tenant(sql: str) -> None:
    assert statement_problems(sql, TENANT) == []
