"""The inbound path of provider webhooks: find the configuration the URL names, verify the request
exactly as its provider signs it, store its events durably (one statement; an event stored before
is a no-op), enqueue the job that applies them, acknowledge. A refused request stores nothing.

Acknowledging fast matters (providers time out and retry), so the mapping to suppressions happens
in the worker (`processing.py`); a lost enqueue only delays it, as the sweeper finds every stored
event still pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import asyncpg
import msgspec

from suppress import queue
from suppress.db import translated_errors
from suppress.errors import NotFound, Unavailable
from suppress.providers import mailgun, postmark, sendgrid, ses, twilio, vonage
from suppress.providers.certificates import FetchUnavailable, SnsCertificates
from suppress.providers.configs import ProviderConfigs
from suppress.providers.model import (
    InboundRequest,
    LoadedProvider,
    ProviderRejected,
    ReplayedRequest,
    Verified,
)
from suppress.sql import Queries

log = logging.getLogger(__name__)

# Events per job; a SendGrid batch of thousands becomes several jobs.
JOB_BATCH: Final = 100
# How long the acknowledgement waits for Redis before leaving the events to the sweeper.
ENQUEUE_WAIT: Final = 2.0


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """What an acknowledged request held: events received, newly stored, already stored before."""

    received: int
    stored: int
    duplicates: int


def events_job_id(tenant_id: int, event_ids: list[int]) -> str:
    """The deterministic job id of applying these stored events."""
    return f"provider-events:{tenant_id}:{event_ids[0]}-{event_ids[-1]}:{len(event_ids)}"


async def enqueue_events(job_queue: queue.Queue | None, tenant_id: int, event_ids: list[int]) -> int:
    """Enqueue the job(s) applying stored events; returns how many jobs were enqueued. A failure is
    logged, never raised: the events are stored, the sweeper will enqueue them."""
    if job_queue is None:
        return 0
    enqueued = 0
    for start in range(0, len(event_ids), JOB_BATCH):
        chunk = event_ids[start : start + JOB_BATCH]
        try:
            if await asyncio.wait_for(
                queue.enqueue(
                    job_queue,
                    queue.JOB_PROCESS_PROVIDER_EVENTS,
                    tenant_id,
                    chunk,
                    job_id=events_job_id(tenant_id, chunk),
                ),
                ENQUEUE_WAIT,
            ):
                enqueued += 1
        except Exception as exc:  # Redis down: the sweeper re-enqueues pending events
            log.warning(
                "could not enqueue provider events of tenant %s (%s); the sweeper will",
                tenant_id,
                type(exc).__name__,
            )
            break
    return enqueued


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ProviderInbox:
    """Verifies, stores and enqueues inbound provider requests."""

    def __init__(
        self,
        configs: ProviderConfigs,
        pool: asyncpg.Pool,
        queries: Queries,
        job_queue: queue.Queue | None,
        certificates: SnsCertificates,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._configs = configs
        self._pool = pool
        self._q = queries
        self._queue = job_queue
        self._certificates = certificates
        self._clock = clock

    async def receive(self, kind: str, provider_id: int, request: InboundRequest) -> Receipt:
        """Verify and store one request; ProviderRejected (nothing stored) when it does not verify."""
        with translated_errors():
            provider = await self._configs.load(kind, provider_id)
        if provider is None:
            raise NotFound("no active provider configuration at this URL")
        now = self._clock()
        try:
            verified = await self._verify(provider, request, now)
        except ProviderRejected as exc:
            log.warning(
                "refused a %s request for provider %s: %s (%s)", kind, provider_id, exc.code, exc.detail
            )
            raise
        except FetchUnavailable as exc:
            raise Unavailable(f"the SNS signing certificate cannot be fetched now ({exc}); retry") from None
        with translated_errors():
            row = await self._pool.fetchrow(
                self._q.store_provider_events,
                provider.tenant_id,
                provider.id,
                [event.key for event in verified.events],
                [event.payload for event in verified.events],
                now,
                verified.nonce,
                verified.nonce_expires_at,
            )
        assert row is not None
        if not row["fresh"]:
            log.warning("refused a replayed %s request for provider %s", kind, provider_id)
            raise ReplayedRequest("this signed request (its token) was accepted before")
        stored = list(row["ids"])
        await enqueue_events(self._queue, provider.tenant_id, stored)
        received = len(verified.events)
        return Receipt(received=received, stored=len(stored), duplicates=received - len(stored))

    async def _verify(self, provider: LoadedProvider, request: InboundRequest, now: datetime) -> Verified:
        if provider.kind == ses.KIND:
            return await ses.verify(request, provider, now, self._certificates)
        verify = {
            sendgrid.KIND: sendgrid.verify,
            mailgun.KIND: mailgun.verify,
            postmark.KIND: postmark.verify,
            twilio.KIND: twilio.verify,
            vonage.KIND: vonage.verify,
        }[provider.kind]
        return verify(request, provider, now)
