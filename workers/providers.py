"""Provider webhooks in the worker: apply acknowledged provider events, re-enqueue events whose job
was lost (so nothing acknowledged is ever dropped), and prune what is no longer needed."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from suppress import queue
from suppress.addresses import AddressHasher
from suppress.config import DerivedKeys
from suppress.providers.certificates import HttpsFetcher, UrlFetcher
from suppress.providers.inbox import JOB_BATCH, events_job_id
from suppress.providers.processing import TRANSIENT, ProviderEvents

log = logging.getLogger(__name__)

# Leave a just-acknowledged event to the job its request enqueued before the sweeper steps in.
SWEEP_GRACE: Final = timedelta(seconds=30)
SWEEP_BATCH: Final = 2000
# Finished events (their evidence is in the ledger) are kept this long for de-duplication and
# inspection: far longer than any provider retries a delivery.
KEEP_FINISHED: Final = timedelta(days=7)
PRUNE_BATCH: Final = 5000


def open_providers(ctx: dict[str, Any]) -> None:
    """Put the address hasher and the SNS fetcher into ctx (unless the caller brought one)."""
    keys = DerivedKeys.from_settings(ctx["settings"])
    ctx["provider_hasher"] = AddressHasher(keys.address_hash_key)
    if ctx.get("sns_fetcher") is None:
        ctx["sns_fetcher"] = HttpsFetcher()
        ctx["sns_fetcher_owned"] = True


async def close_providers(ctx: dict[str, Any]) -> None:
    """Close what open_providers opened."""
    fetcher: UrlFetcher | None = ctx.get("sns_fetcher")
    if fetcher is not None and ctx.pop("sns_fetcher_owned", False):
        await fetcher.aclose()


def _events(ctx: dict[str, Any]) -> ProviderEvents:
    hasher = ctx.get("provider_hasher")
    if hasher is None:
        hasher = AddressHasher(DerivedKeys.from_settings(ctx["settings"]).address_hash_key)
    return ProviderEvents(ctx["pool"], ctx["queries"], hasher, ctx.get("redis"), ctx.get("sns_fetcher"))


async def process_provider_events(
    ctx: dict[str, Any], tenant_id: int, event_ids: list[int]
) -> dict[str, int]:
    """Apply stored provider events; counts by result. Safe to run twice (claims, processed flag);
    an outage retries the job, and events already applied are skipped then."""
    events = _events(ctx)
    results: Counter[str] = Counter()
    for event_id in event_ids:
        try:
            results[await events.process(tenant_id, int(event_id), datetime.now(UTC))] += 1
        except TRANSIENT as exc:
            what = f"provider events of tenant {tenant_id} wait for an outage"
            raise queue.retry_later(ctx, what, exc) from None
    return dict(results)


async def sweep_provider_events(ctx: dict[str, Any]) -> int:
    """Re-enqueue events acknowledged but still pending after the grace period (their job was
    lost to a Redis outage or a killed worker); returns how many jobs were enqueued."""
    pool, queries, redis = ctx["pool"], ctx["queries"], ctx["redis"]
    now = datetime.now(UTC)
    rows = await pool.fetch(queries.stale_provider_events, now - SWEEP_GRACE, now, SWEEP_BATCH)
    by_tenant: defaultdict[int, list[int]] = defaultdict(list)
    for row in rows:
        by_tenant[row["tenant_id"]].append(row["id"])
    enqueued = 0
    for tenant_id, ids in by_tenant.items():
        ids.sort()
        for start in range(0, len(ids), JOB_BATCH):
            chunk = ids[start : start + JOB_BATCH]
            if await queue.enqueue(
                redis,
                queue.JOB_PROCESS_PROVIDER_EVENTS,
                tenant_id,
                chunk,
                job_id=events_job_id(tenant_id, chunk),
            ):
                enqueued += 1
    if enqueued:
        log.info("sweeper re-enqueued %d job(s) of pending provider events", enqueued)
    return enqueued


async def prune_provider_records(ctx: dict[str, Any]) -> dict[str, int]:
    """Forget expired nonces, long-finished events and soft bounces too old to count."""
    pool, queries = ctx["pool"], ctx["queries"]
    now = datetime.now(UTC)
    row = await pool.fetchrow(queries.prune_provider_records, now, now - KEEP_FINISHED, PRUNE_BATCH)
    return {"nonces": row["nonces"], "events": row["events"], "bounces": row["bounces"]} if row else {}
