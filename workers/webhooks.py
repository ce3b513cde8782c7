"""Outbound webhooks in the worker: fan batches of ledger events out into deliveries, send them signed,
retry with exponential backoff, and re-enqueue deliveries whose job was lost.

Delivery is at least once: a receiver de-duplicates on the payload's `id` (also `Suppress-Event-Id`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from arq import Retry

from suppress import queue
from suppress.effects import EffectBatch, load_event
from suppress.ledger import checkpoint_out
from suppress.outbound import failure_category, public_client
from suppress.webhooks import (
    EVENT_ID_HEADER,
    MAX_ATTEMPTS,
    SIGNATURE_HEADER,
    USER_AGENT,
    SecretBox,
    checkpoint_payload_body,
    checkpoint_ref,
    delivery_job_id,
    event_ref,
    payload_body,
    retry_delay,
    sign,
)
from workers.effects import AfterCommit

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0
# A claimed attempt holds its delivery this long; after that a lost attempt is due again.
LEASE = timedelta(seconds=60)
# Leave a just-due retry to its own deferred job before the cron steps in.
REDELIVER_GRACE = timedelta(seconds=15)
REDELIVER_BATCH = 1000
# arq's own try limit for the delivery job: above MAX_ATTEMPTS, as a not-yet-due run also retries
DELIVERY_MAX_TRIES = 2 * MAX_ATTEMPTS
DELIVERY_JOB_TIMEOUT = 60


def open_webhooks(ctx: dict[str, Any]) -> None:
    """Put the HTTP client and the secret box into ctx (worker start-up). The client reaches public
    addresses only unless SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS is on; ctx["resolver"], when
    given, resolves host names instead of the system (tests)."""
    settings = ctx["settings"]
    ctx["webhook_box"] = SecretBox.from_secret(settings.require_secret())
    ctx["webhook_http"] = public_client(
        resolve=ctx.get("resolver"),
        allow_private=settings.webhook_allow_private_targets,
        timeout=HTTP_TIMEOUT,
        headers={"User-Agent": USER_AGENT},
    )


async def close_webhooks(ctx: dict[str, Any]) -> None:
    """Close what open_webhooks opened."""
    client = ctx.pop("webhook_http", None)
    if client is not None:
        await client.aclose()


async def fan_out(ctx: dict[str, Any], conn: asyncpg.Connection, batch: EffectBatch) -> AfterCommit | None:
    """An effect: one delivery per (event, active webhook of the tenant that takes the event's
    kind), made with one statement for the batch; their jobs are enqueued once it has committed.
    Safe to run twice: existing deliveries are neither duplicated nor enqueued again."""
    rows = await conn.fetch(
        ctx["queries"].create_webhook_deliveries, batch.tenant_id, batch.event_ids, datetime.now(UTC)
    )
    if not rows:
        return None
    deliveries = [(row["tenant_id"], row["id"]) for row in rows]

    async def enqueue_deliveries() -> None:
        await _enqueue_many(ctx, deliveries)

    return enqueue_deliveries


async def deliver_webhook(ctx: dict[str, Any], tenant_id: int, delivery_id: int) -> str:
    """Make the next attempt at one delivery; returns its status. A failed attempt that has retries
    left raises Retry with the backoff delay. Safe to run twice: a delivered delivery is not sent again."""
    pool, queries = ctx["pool"], ctx["queries"]
    now = datetime.now(UTC)
    claim = await pool.fetchrow(
        queries.claim_webhook_delivery, tenant_id, delivery_id, now, now + LEASE, MAX_ATTEMPTS
    )
    if claim is None:
        return await _unclaimed(ctx, tenant_id, delivery_id, now)
    attempt: int = claim["attempt"]
    subject = await _subject(ctx, tenant_id, claim)
    status_code: int | None = None
    error: str | None = None
    duration_ms = 0
    if subject is None:
        error = "the ledger event no longer exists"
    else:
        try:
            secret = ctx["webhook_box"].open(tenant_id, claim["secret_box"])
        except ValueError:
            error = "the signing secret cannot be opened (was SUPPRESS_SECRET changed?)"
        else:
            ref, body = subject
            status_code, error, duration_ms = await _post(
                ctx["webhook_http"], claim["url"], secret, ref, body
            )
    delivered = status_code is not None and 200 <= status_code < 300
    delay = retry_delay(attempt, secrets.randbelow(1000) / 1000)
    if delivered:
        status, next_attempt_at = "delivered", None
    elif attempt >= MAX_ATTEMPTS or subject is None:
        status, next_attempt_at = "failed", None
    else:
        status, next_attempt_at = "pending", datetime.now(UTC) + timedelta(seconds=delay)
    recorded = await pool.fetchval(
        queries.finish_webhook_attempt,
        tenant_id,
        delivery_id,
        attempt,
        status_code,
        error,
        duration_ms,
        status,
        next_attempt_at,
        datetime.now(UTC),
    )
    if recorded is None:  # cancelled, or the lease ran out and a later attempt took over
        return "superseded"
    if status == "pending":
        raise Retry(defer=delay)
    if status == "failed":
        log.warning("webhook delivery %s/%s failed after %d attempt(s)", tenant_id, delivery_id, attempt)
    return status


async def redeliver_due_webhooks(ctx: dict[str, Any]) -> int:
    """Enqueue deliveries whose next attempt is due but which have no job (lost enqueue, killed
    worker); returns how many were enqueued. Ones still queued or running are left alone."""
    pool, queries = ctx["pool"], ctx["queries"]
    rows = await pool.fetch(
        queries.due_webhook_deliveries, datetime.now(UTC) - REDELIVER_GRACE, REDELIVER_BATCH
    )
    enqueued = await _enqueue_many(ctx, [(row["tenant_id"], row["id"]) for row in rows]) if rows else 0
    if enqueued:
        log.info("re-enqueued %d due webhook deliverie(s)", enqueued)
    return enqueued


async def enqueue_delivery(ctx: dict[str, Any], tenant_id: int, delivery_id: int) -> bool:
    """Enqueue one delivery's job; False (logged) when Redis does not take it."""
    return await _enqueue_many(ctx, [(tenant_id, delivery_id)]) == 1


async def _enqueue_many(ctx: dict[str, Any], deliveries: list[tuple[int, int]]) -> int:
    """Enqueue the delivery jobs (a round trip per thousand); returns how many were enqueued."""
    try:
        return await queue.enqueue_many(
            ctx["redis"],
            queue.JOB_DELIVER_WEBHOOK,
            [(delivery_job_id(t, d), (t, d)) for t, d in deliveries],
        )
    except Exception as exc:  # Redis trouble: the redelivery cron finds the deliveries due
        log.warning(
            "could not enqueue %d webhook deliverie(s), first %s/%s (%s)",
            len(deliveries),
            *deliveries[0],
            type(exc).__name__,
        )
        return 0


async def _unclaimed(ctx: dict[str, Any], tenant_id: int, delivery_id: int, now: datetime) -> str:
    """Why a delivery could not be claimed, closing it where it can never be sent."""
    pool, queries = ctx["pool"], ctx["queries"]
    row = await pool.fetchrow(queries.webhook_delivery_state, tenant_id, delivery_id)
    if row is None:
        return "gone"
    if row["status"] != "pending":
        return str(row["status"])
    if row["disabled_at"] is not None or row["attempts"] >= MAX_ATTEMPTS:
        status = "cancelled" if row["disabled_at"] is not None else "failed"
        ended = await pool.fetchval(queries.end_webhook_delivery, tenant_id, delivery_id, status, now)
        return str(ended or "superseded")
    # Not due yet: another run holds it, or this one came early. Come back when it is due.
    raise Retry(defer=max((row["next_attempt_at"] - now).total_seconds(), 1.0))


async def _subject(ctx: dict[str, Any], tenant_id: int, claim: Any) -> tuple[str, bytes] | None:
    """The public id and exact body of what a delivery sends: a ledger event or a checkpoint."""
    pool, queries = ctx["pool"], ctx["queries"]
    if claim["checkpoint_seq"] is not None:
        row = await pool.fetchrow(queries.ledger_checkpoint, tenant_id, claim["checkpoint_seq"])
        if row is None:
            return None
        checkpoint = checkpoint_out(row)
        return checkpoint_ref(tenant_id, checkpoint.seq), checkpoint_payload_body(checkpoint)
    event = await load_event(pool, queries, tenant_id, claim["event_id"])
    return None if event is None else (event_ref(tenant_id, event.id), payload_body(event))


async def _post(
    client: httpx.AsyncClient, url: str, secret: str, ref: str, body: bytes
) -> tuple[int | None, str | None, int]:
    """POST the signed payload once: (HTTP status or None, error or None, duration in ms)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        EVENT_ID_HEADER: ref,
    }
    status_code: int | None = None
    error: str | None = None
    started = time.monotonic()
    try:
        # httpx's timeout bounds each read; this bounds the whole exchange
        async with asyncio.timeout(HTTP_TIMEOUT):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status_code = response.status_code  # the body is never read: we only need the status
        if 300 <= status_code < 400:
            error = "redirects are not followed"
    except Exception as exc:  # whatever stopped the request, the attempt failed
        # The tenant sees a category; the details (which could map internal ports) stay in our log.
        error = failure_category(exc)
        if error == "timed out":
            error = f"timed out after {HTTP_TIMEOUT:g} s"
        log.info("webhook request %s failed: %s", ref, type(exc).__name__)
    return status_code, error, round((time.monotonic() - started) * 1000)
