"""Named SQL statements: `sql/<stem>.sql` files of `-- name: snake_case_name` blocks.

Each block is a one-line description comment after the name line, then one statement with `$n`
parameters. `load_queries()` reads every file once at start-up into a `Queries` instance and fails
fast when the files and the attributes declared on `Queries` disagree (missing, extra, duplicate or
empty statements), so a broken query stops the boot instead of the first request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import msgspec

from suppress.errors import QueryRegistryError

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*$")


def sql_dir() -> Path:
    """The folder holding the SQL files: inside the package when installed, the repo's sql/ otherwise."""
    packaged = Path(__file__).parent / "_sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


class Query(msgspec.Struct, frozen=True):
    """A SQL statement with the name and file it came from."""

    text: str
    name: str
    source: str


class Queries:
    """Every named statement the code runs. Declared here, defined in sql/*.sql."""

    files: ClassVar[tuple[str, ...]] = (
        "tenants",
        "checks",
        "topics",
        "recipients",
        "suppressions",
        "writes",
        "effects",
        "unsubscribe",
        "webhooks",
        "ledger",
        "rights",
        "health",
        "ops",
        "imports",
        "exports",
        "providers",
    )

    # tenants.sql
    create_tenant: str
    create_api_key: str
    authenticate_api_key: str
    tenant_by_name: str
    tenant_settings: str
    update_tenant_settings: str
    # checks.sql
    resolve_check_context: str
    recipient_states: str
    add_check_counts: str
    # topics.sql
    create_topic: str
    topic_by_name: str
    list_topics: str
    # recipients.sql
    recipient_events: str
    recipient_details: str
    # writes.sql
    lock_recipients: str
    rewrite_projection: str
    apply_suppressions: str
    apply_lifts: str
    apply_undos: str
    apply_consents: str
    apply_customer_links: str
    apply_customers: str
    customer_recipients: str
    apply_objection: str
    # suppressions.sql
    clear_erasure: str
    suppressions_at_scope: str
    list_suppressions: str
    expired_suppressions: str
    resolve_campaign: str
    # effects.sql
    ledger_event: str
    claim_effects: str
    tenants_with_stale_effects: str
    # unsubscribe.sql
    recipient_page: str
    unsubscribe_in_force: str
    # webhooks.sql
    create_webhook: str
    list_webhooks: str
    webhook_by_id: str
    disable_webhook: str
    list_webhook_deliveries: str
    create_webhook_deliveries: str
    claim_webhook_delivery: str
    webhook_delivery_state: str
    finish_webhook_attempt: str
    end_webhook_delivery: str
    due_webhook_deliveries: str
    # ledger.sql
    ledger_unsealed_tenants: str
    ledger_seal_lock: str
    ledger_last_checkpoint: str
    ledger_seal_state: str
    ledger_unsealed_events: str
    ledger_seal: str
    ledger_settle: str
    ledger_checkpoints_after: str
    ledger_checkpoint: str
    ledger_events_by_id: str
    ledger_leaves: str
    ledger_sealed_events: str
    ledger_unsealed_summary: str
    ledger_head: str
    ledger_lanes_in_use: str
    ledger_events_for_verify: str
    # health.sql
    count_health_events: str
    tenant_event_id_range: str
    event_ids_between: str
    forget_health_events: str
    prune_health_counted_events: str
    health_tenants: str
    health_refresh_inputs: str
    health_audience_groups: str
    prefer_hash_aggregate: str
    refresh_campaign_checks: str
    save_health_snapshot: str
    health_overview: str
    health_daily_counts: str
    health_latency_counts: str
    health_campaign_rows: str
    open_dashboard_session: str
    dashboard_session_viewer: str
    end_dashboard_session: str
    # rights.sql
    erase_recipient: str
    delete_customer: str
    set_restriction: str
    customer_addresses: str
    customer_by_ref: str
    recipient_export_row: str
    scrub_stored_copies: str
    # ops.sql
    ping: str
    # imports.sql
    create_import: str
    add_import_chunk: str
    seal_import: str
    import_chunk: str
    import_tenant: str
    import_by_id: str
    import_errors_page: str
    add_import_errors: str
    claim_import: str
    checkpoint_import: str
    release_import: str
    finish_import: str
    stalled_imports: str
    # exports.sql
    export_suppressions: str
    # providers.sql
    create_provider: str
    list_providers: str
    provider_by_id: str
    delete_provider: str
    provider_for_inbound: str
    store_provider_events: str
    claim_provider_event: str
    finish_provider_event: str
    release_provider_event: str
    stale_provider_events: str
    record_soft_bounce: str
    prune_provider_records: str
    list_provider_events: str

    @classmethod
    def declared(cls) -> set[str]:
        """The statement names the code expects."""
        return {n for n, t in cls.__annotations__.items() if t in ("str", str)}


def parse_sql(text: str, source: str) -> dict[str, Query]:
    """Split one file into its named statements."""
    found: dict[str, Query] = {}
    name: str | None = None
    body: list[str] = []

    def flush() -> None:
        if name is None:
            return
        statement = "\n".join(line for line in body if not line.lstrip().startswith("--")).strip()
        statement = statement.rstrip(";").strip()
        if not statement:
            raise QueryRegistryError(f"{source}: query {name!r} has no statement")
        if ";" in statement.replace("';'", ""):
            raise QueryRegistryError(f"{source}: query {name!r} holds more than one statement")
        if name in found:
            raise QueryRegistryError(f"{source}: query {name!r} is defined twice")
        found[name] = Query(statement, name, source)

    for line in text.splitlines():
        match = _NAME_LINE.match(line.strip())
        if match:
            flush()
            name, body = match.group(1), []
        elif name is not None:
            body.append(line)
        elif line.strip() and not line.strip().startswith("--"):
            raise QueryRegistryError(f"{source}: SQL outside a named block: {line.strip()[:60]!r}")
    flush()
    return found


def load_queries(directory: Path | None = None) -> Queries:
    """Read every declared file and bind its statements to a `Queries` instance."""
    directory = directory or sql_dir()
    statements: dict[str, Query] = {}
    for stem in Queries.files:
        path = directory / f"{stem}.sql"
        if not path.is_file():
            raise QueryRegistryError(f"missing SQL file {path}")
        for name, query in parse_sql(path.read_text(encoding="utf-8"), path.name).items():
            if name in statements:
                raise QueryRegistryError(
                    f"query {name!r} is defined in both {statements[name].source} and {path.name}"
                )
            statements[name] = query
    declared = Queries.declared()
    missing = sorted(declared - statements.keys())
    extra = sorted(statements.keys() - declared)
    if missing or extra:
        raise QueryRegistryError(
            "SQL files and code disagree: "
            + "; ".join(
                part
                for part in (
                    f"declared but not defined: {', '.join(missing)}" if missing else "",
                    f"defined but not declared: {', '.join(extra)}" if extra else "",
                )
                if part
            )
        )
    queries = Queries()
    for name, query in statements.items():
        setattr(queries, name, query.text)  # asyncpg wants exactly `str`
    return queries
