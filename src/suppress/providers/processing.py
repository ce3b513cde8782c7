"""Applying stored provider events (the worker side of provider webhooks).

Each event is claimed (so two workers never apply it at once), mapped to changes in our
vocabulary by its provider module's `interpret`, and applied through the same core as the API:
`Recipients.suppress` for hard bounces (`hard_bounced`), complaints (`complained`), provider
unsubscribes (`unsubscribed`, per mapped topic or all topics) and manual suppressions, the tenant's
soft-bounce rule for soft bounces (N within the window → `soft_bounced` until an expiry), and
`SmsInbox` for inbound SMS (the keyword path). Every ledger event carries the evidence: provider,
configuration id, the provider's event id and message id. SNS subscription confirmations are
confirmed by GET-ing the (validated) SubscribeURL.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import msgspec

from suppress.addresses import AddressHasher
from suppress.consents import ConsentIn
from suppress.db import DATABASE_DOWN
from suppress.decisions import tenant_policy
from suppress.errors import InvalidAddress, SuppressError, Unavailable, UnknownTopic
from suppress.intents import SoftBounceIntent
from suppress.models import SuppressionReason
from suppress.providers import mailgun, postmark, sendgrid, ses, twilio, vonage
from suppress.providers.certificates import FetchFailed, FetchUnavailable, UrlFetcher
from suppress.providers.model import Change, MalformedProviderRequest, ProviderRejected, ProviderSettings
from suppress.queue import Queue
from suppress.recipients import Recipients
from suppress.sms import InboundSmsIn, SmsInbox
from suppress.sql import Queries
from suppress.suppressions import SuppressionIn
from suppress.tenants import Principal
from suppress.writes import SoftBounceOutcome
from suppress.writing import WriteResult

log = logging.getLogger(__name__)

# A claimed event is held this long; a worker that dies mid-event frees it by then.
LEASE: Final = timedelta(minutes=5)
# After this many failed attempts (not outages) an event is marked failed and left for a person.
MAX_ATTEMPTS: Final = 10
# Failures that are outages: the event is given back and the job retried.
TRANSIENT: Final[tuple[type[BaseException], ...]] = (*DATABASE_DOWN, Unavailable, FetchUnavailable)

INTERPRETERS: Final[dict[str, Callable[[dict[str, Any], ProviderSettings], list[Change]]]] = {
    ses.KIND: ses.interpret,
    sendgrid.KIND: sendgrid.interpret,
    mailgun.KIND: mailgun.interpret,
    postmark.KIND: postmark.interpret,
    twilio.KIND: twilio.interpret,
    vonage.KIND: vonage.interpret,
}
_REASONS: Final[dict[str, SuppressionReason]] = {
    "hard_bounce": "hard_bounced",
    "complaint": "complained",
    "manual": "manual",
}


class ProviderPrincipal(Principal, frozen=True, kw_only=True):
    """The tenant acting on a provider's report: the ledger names the provider configuration."""

    provider: str

    @property
    def actor(self) -> str:
        return self.provider


class _Attributed(Recipients):
    """The write core, adding the provider's evidence to every event it writes (so the SMS keyword
    path records where the SMS came from without a copy of that path)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        hasher: AddressHasher,
        job_queue: Queue | None,
        evidence: dict[str, Any],
    ) -> None:
        super().__init__(pool, queries, hasher, job_queue)
        self._evidence = evidence

    async def suppress(
        self,
        principal: Principal,
        data: SuppressionIn,
        now: datetime,
        *,
        source: str = "api",
        kind: str = "suppression_added",
        extra: dict[str, Any] | None = None,
    ) -> WriteResult:
        extra = {**(extra or {}), **self._evidence}
        return await super().suppress(principal, data, now, source=source, kind=kind, extra=extra)

    async def give_consent(self, principal: Principal, data: ConsentIn, now: datetime) -> WriteResult:
        data = msgspec.structs.replace(data, evidence={**data.evidence, **self._evidence})
        return await super().give_consent(principal, data, now)


class _ProviderAnswers(SmsInbox):
    """The keyword path for a provider that sends the confirmation itself: ours is not queued."""

    async def _enqueue_reply(self, tenant_id: int, to: str, sender_id: str, text: str, job_id: str) -> None:
        log.debug("SMS reply %s left to the provider", job_id)


class ProviderEvents:
    """Claims stored provider events and applies them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        hasher: AddressHasher,
        job_queue: Queue | None,
        fetcher: UrlFetcher | None,
    ) -> None:
        self._pool = pool
        self._q = queries
        self._hasher = hasher
        self._queue = job_queue
        self._fetcher = fetcher
        self._recipients = Recipients(pool, queries, hasher, job_queue)

    async def process(self, tenant_id: int, event_id: int, now: datetime) -> str:
        """Apply one stored event: `processed`, `failed` (left for a person after MAX_ATTEMPTS),
        `retry` (an error; the sweeper brings it back) or `skipped` (done, or held by another
        worker). Outages raise, with the event given back."""
        claim = await self._pool.fetchrow(self._q.claim_provider_event, tenant_id, event_id, now, now + LEASE)
        if claim is None:
            return "skipped"
        try:
            outcomes = await self._apply_event(tenant_id, claim, now)
        except TRANSIENT as exc:
            await self._give_back(tenant_id, event_id, f"outage: {type(exc).__name__}")
            raise
        except Exception as exc:
            log.exception("provider event %s/%s could not be applied", tenant_id, event_id)
            error = f"{type(exc).__name__}: {exc}"[:1000]
            if claim["attempts"] >= MAX_ATTEMPTS:
                await self._pool.execute(
                    self._q.finish_provider_event, tenant_id, event_id, "failed", now, None, error
                )
                return "failed"
            await self._give_back(tenant_id, event_id, error)
            return "retry"
        await self._pool.execute(
            self._q.finish_provider_event, tenant_id, event_id, "processed", now, outcomes, None
        )
        return "processed"

    async def _give_back(self, tenant_id: int, event_id: int, error: str) -> None:
        with contextlib.suppress(*TRANSIENT):  # if it cannot be given back, its lease runs out
            await self._pool.execute(self._q.release_provider_event, tenant_id, event_id, error)

    async def _apply_event(
        self, tenant_id: int, claim: asyncpg.Record, now: datetime
    ) -> list[dict[str, Any]]:
        kind = claim["kind"]
        settings = msgspec.convert(claim["settings"], ProviderSettings)
        principal = ProviderPrincipal(
            key_id=0,
            scopes=frozenset({"write"}),
            tenant_id=tenant_id,
            tenant_name=claim["tenant_name"],
            default_region=claim["default_region"],
            soft_bounce_suppress_days=claim["soft_bounce_suppress_days"],
            require_notice_version=claim["require_notice_version"],
            consent_validity_days=claim["consent_validity_days"],
            policy=tenant_policy(claim),
            provider=f"provider:{kind}:{claim['provider_id']}",
        )
        changes = INTERPRETERS[kind](claim["payload"], settings)
        return [await self._apply(principal, claim, change, now) for change in changes]

    async def _apply(
        self, principal: ProviderPrincipal, claim: asyncpg.Record, change: Change, now: datetime
    ) -> dict[str, Any]:
        """Apply one change; returns what it did (no addresses: the outcome is shown by the API)."""
        outcome: dict[str, Any] = {"action": change.action}
        if change.action == "ignore":
            return {**outcome, **{k: v for k, v in change.detail.items() if k in ("event", "record", "type")}}
        if change.action == "confirm_subscription":
            return {**outcome, "result": await self._confirm(claim, change)}
        if change.address is None:
            return {**outcome, "result": "no_address"}
        kind = claim["kind"]
        evidence = {
            "provider": kind,
            "provider_config": claim["provider_id"],
            "provider_event_id": claim["event_key"],
            "message_id": change.message_id,
            **change.detail,
        }
        evidence = {k: v for k, v in evidence.items() if v is not None}
        # the provider's time of the event, unless it claims to lie ahead of ours
        at = change.occurred_at if change.occurred_at and change.occurred_at <= now else claim["received_at"]
        source = f"provider:{kind}"
        try:
            if change.action == "sms":
                return {**outcome, **await self._sms(principal, change, evidence, at)}
            if change.action == "soft_bounce":
                return {**outcome, **await self._soft_bounce(principal, claim, change, evidence, at, now)}
            if change.action == "unsubscribe":
                return {**outcome, **await self._unsubscribe(principal, change, evidence, at, source)}
            reason = _REASONS[change.action]
            data = SuppressionIn(
                channel=change.channel, address=change.address, reason=reason, campaign=change.campaign
            )
            written = await self._recipients.suppress(principal, data, at, source=source, extra=evidence)
            return {**outcome, "result": reason, "event_id": written.event_id}
        except InvalidAddress:
            return {**outcome, "result": "invalid_address"}
        except SuppressError as exc:
            if exc.status >= 500:
                raise
            # the core refused the write (e.g. an erased address): retrying would not change that
            return {**outcome, "result": "refused", "code": exc.code}

    async def _unsubscribe(
        self, principal: Principal, change: Change, evidence: dict[str, Any], at: datetime, source: str
    ) -> dict[str, Any]:
        assert change.address is not None
        event_ids: list[int] = []
        applied: list[str] = []
        scopes: list[str | None] = [*change.topics] or [None]
        for topic in scopes:
            data = SuppressionIn(
                channel=change.channel,
                address=change.address,
                reason="unsubscribed",
                topic=topic,
                campaign=change.campaign,
            )
            try:
                written = await self._recipients.suppress(
                    principal, data, at, source=source, kind="unsubscribed", extra=evidence
                )
            except UnknownTopic:  # the mapped topic is gone: the safe reading is "everything"
                data = msgspec.structs.replace(data, topic=None)
                written = await self._recipients.suppress(
                    principal, data, at, source=source, kind="unsubscribed", extra=evidence
                )
                event_ids.append(written.event_id)
                applied = []
                break
            event_ids.append(written.event_id)
            if topic is not None:
                applied.append(topic)
        # `topics` empty: unsubscribed from every topic of the channel
        return {"result": "unsubscribed", "topics": applied, "event_ids": event_ids}

    async def _soft_bounce(
        self,
        principal: Principal,
        claim: asyncpg.Record,
        change: Change,
        evidence: dict[str, Any],
        at: datetime,
        now: datetime,
    ) -> dict[str, Any]:
        """Count the bounce; at the tenant's threshold within its window, a `soft_bounced`
        suppression until `suppress_days` after the latest bounce."""
        assert change.address is not None
        normalised, digest = self._recipients.key(principal, change.channel, change.address)
        # one observation per bounced message: repeated reports of one message count once
        observation = f"{claim['kind']}:{change.message_id}" if change.message_id else f"event:{claim['id']}"
        bounce = SoftBounceIntent(
            channel=change.channel,
            address_hash=digest,
            address=normalised,
            observation_key=observation,
            observed_at=at,
            provider_event_id=claim["id"],
            source=f"provider:{claim['kind']}",
            actor=principal.actor,
            now=now,
            campaign_id=await self._recipients.campaign_id(principal, change.campaign),
            data=evidence,
            # a retried event re-checks the threshold: its first attempt may have stopped before the write
            recheck=claim["attempts"] > 1,
        )
        [outcome] = (await self._recipients.writer.apply(principal.tenant_id, [bounce])).outcomes
        assert isinstance(outcome, SoftBounceOutcome)
        result: dict[str, Any] = {
            "result": "counted" if outcome.added else "already_counted",
            "soft_bounces": outcome.in_window,
            "threshold": outcome.threshold,
        }
        if outcome.expired:
            return {**result, "result": "counted_expired"}
        if outcome.event_id is None:
            return result
        return {**result, "result": "soft_bounced", "event_id": outcome.event_id}

    async def _sms(
        self, principal: Principal, change: Change, evidence: dict[str, Any], at: datetime
    ) -> dict[str, Any]:
        assert change.address is not None
        recipients = _Attributed(self._pool, self._q, self._hasher, self._queue, evidence)
        inbox = (SmsInbox if change.reply else _ProviderAnswers)(recipients, self._queue)
        sms = InboundSmsIn(from_=change.address, to=change.to or "", text=change.text or "")
        received = await inbox.receive(principal, sms, at)
        return {
            "result": received.action or "no_keyword",
            "keyword": received.keyword,
            "event_id": received.event_id,
        }

    async def _confirm(self, claim: asyncpg.Record, change: Change) -> str:
        """GET the SubscribeURL (checked again: it came out of storage) to confirm the subscription."""
        try:
            ses.check_subscribe_url(change.url, str(claim["payload"].get("TopicArn", "")))
        except (ProviderRejected, MalformedProviderRequest):
            return "refused"
        if self._fetcher is None:
            raise Unavailable("no fetcher to confirm the SNS subscription with")
        assert change.url is not None
        try:
            await self._fetcher.fetch(change.url)
        except FetchFailed as exc:
            log.warning("SNS subscription confirmation for event %s failed: %s", claim["id"], exc)
            return "confirmation_failed"
        return "confirmed"
