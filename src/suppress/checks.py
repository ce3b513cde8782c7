"""The pre-send check: for each recipient, allowed or not, on which basis or why, plus the link.

Hot path: normalise and hash every address, fetch the state of the whole batch with array
parameters (a few chunks, fetched concurrently while the next chunk is hashed), decide each
recipient with the pure policy, mint a token for every allowed marketing recipient, and add the
batch's outcome counts to the day's counters in one statement.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from typing import Annotated

import asyncpg
import msgspec
from msgspec import Meta

from suppress import metrics
from suppress.addresses import AddressHasher, normalise
from suppress.errors import BatchTooLarge, InvalidInput, UnknownTopic
from suppress.models import Basis, CampaignName, Channel, Offer, Purpose, Reason, TopicName
from suppress.policy import (
    DENY,
    Decision,
    MessageContext,
    RecipientState,
    decide,
)
from suppress.sql import Queries
from suppress.tenants import Principal
from suppress.tokens import TokenClaims, TokenKeyring

MAX_RECIPIENTS = 100_000
# Big enough that per-query overhead vanishes, small enough that hashing the next chunk overlaps
# with PostgreSQL answering this one.
LOOKUP_CHUNK = 20_000
ONE_CLICK = "List-Unsubscribe=One-Click"

CheckRecipient = Annotated[str, Meta(max_length=512)]


class CheckRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /v1/checks body."""

    channel: Channel
    purpose: Purpose
    recipients: list[CheckRecipient]
    topic: TopicName | None = None
    offer: Offer = "own"
    campaign: CampaignName | None = None


class CheckResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The decision for one recipient, in the order of the request."""

    recipient: str
    allowed: bool
    basis: Basis | None
    reason: Reason | None
    unsubscribe_url: str | None = None
    list_unsubscribe: str | None = None
    list_unsubscribe_post: str | None = None


class CheckSummary(msgspec.Struct, frozen=True, kw_only=True):
    """Counts over the batch."""

    allowed: int
    denied: int
    reasons: dict[str, int]
    bases: dict[str, int]


class CheckResponse(msgspec.Struct, frozen=True, kw_only=True):
    """POST /v1/checks answer."""

    results: list[CheckResult]
    summary: CheckSummary


class CheckService:
    """Everything a check needs that lives longer than one request."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        hasher: AddressHasher,
        keyring: TokenKeyring,
        public_url: str,
    ) -> None:
        self._pool = pool
        self._queries = queries
        self._hasher = hasher
        self._keyring = keyring
        self._unsubscribe_base = public_url.rstrip("/") + "/u/"

    async def check(self, principal: Principal, request: CheckRequest, now: datetime) -> CheckResponse:
        """Decide every recipient of one request."""
        count = len(request.recipients)
        if count == 0:
            raise InvalidInput("recipients must hold at least one address")
        if count > MAX_RECIPIENTS:
            raise BatchTooLarge(
                f"{count} recipients in one request; at most {MAX_RECIPIENTS} (split the list)"
            )
        with metrics.CHECK_SECONDS.time():
            topic_id, soft_opt_in, campaign_id = await self._resolve_context(principal, request)
            message = MessageContext(
                purpose=request.purpose,
                topic_id=topic_id,
                topic_soft_opt_in=soft_opt_in,
                offer=request.offer,
            )
            hashes, states = await self._lookup(principal, request)
            results, outcomes = self._decide_all(
                principal, request, message, hashes, states, now, campaign_id
            )
            await self._count(principal, request.channel, campaign_id, outcomes, now)
        return _response(results, outcomes, request)

    async def _resolve_context(
        self, principal: Principal, request: CheckRequest
    ) -> tuple[int | None, bool, int | None]:
        if request.topic is None and request.campaign is None:
            return None, False, None
        row = await self._pool.fetchrow(
            self._queries.resolve_check_context, principal.tenant_id, request.topic, request.campaign
        )
        assert row is not None
        if request.topic is not None and row["topic_id"] is None:
            raise UnknownTopic(f"no topic named {request.topic!r}; create it with POST /v1/topics")
        return row["topic_id"], bool(row["topic_soft_opt_in"]), row["campaign_id"]

    async def _lookup(
        self, principal: Principal, request: CheckRequest
    ) -> tuple[list[bytes | None], dict[bytes, RecipientState]]:
        """Hash every address (None when it does not normalise) and fetch the known states."""
        channel, region = request.channel, principal.default_region
        hash_address = self._hasher.hash
        hashes: list[bytes | None] = []
        fetches: list[asyncio.Task[list[asyncpg.Record]]] = []
        recipients = request.recipients
        for start in range(0, len(recipients), LOOKUP_CHUNK):
            chunk_hashes: set[bytes] = set()
            for raw in recipients[start : start + LOOKUP_CHUNK]:
                normalised = normalise(channel, raw, region)
                if normalised is None:
                    hashes.append(None)
                    continue
                digest = hash_address(channel, normalised)
                hashes.append(digest)
                chunk_hashes.add(digest)
            if chunk_hashes:
                fetches.append(
                    asyncio.create_task(
                        self._pool.fetch(
                            self._queries.recipient_states,
                            principal.tenant_id,
                            channel,
                            list(chunk_hashes),
                        )
                    )
                )
        states: dict[bytes, RecipientState] = {}
        try:
            for rows in await asyncio.gather(*fetches):
                for row in rows:
                    states[row[0]] = RecipientState(*row[1:])
        finally:
            for task in fetches:
                task.cancel()
        return hashes, states

    def _decide_all(
        self,
        principal: Principal,
        request: CheckRequest,
        message: MessageContext,
        hashes: list[bytes | None],
        states: dict[bytes, RecipientState],
        now: datetime,
        campaign_id: int | None,
    ) -> tuple[list[CheckResult], Counter[Decision]]:
        policy = principal.policy
        mint = self._keyring.mint
        base = self._unsubscribe_base
        is_email = request.channel == "email"
        wants_link = request.purpose == "marketing"
        issued_at = int(now.timestamp())
        invalid = DENY["invalid_address"]
        results: list[CheckResult] = []
        outcomes: Counter[Decision] = Counter()
        append = results.append
        for raw, digest in zip(request.recipients, hashes, strict=True):
            if digest is None:
                decision = invalid
            else:
                decision = decide(policy, message, states.get(digest), now)
            outcomes[decision] += 1
            if decision.allowed and wants_link and digest is not None:
                token = mint(
                    TokenClaims(
                        tenant_id=principal.tenant_id,
                        channel=request.channel,
                        address_hash=digest,
                        topic_id=message.topic_id,
                        campaign_id=campaign_id,
                        issued_at=issued_at,
                    )
                )
                url = base + token
                if is_email:
                    append(
                        CheckResult(
                            recipient=raw,
                            allowed=True,
                            basis=decision.basis,
                            reason=None,
                            unsubscribe_url=url,
                            list_unsubscribe=f"<{url}>",
                            list_unsubscribe_post=ONE_CLICK,
                        )
                    )
                else:
                    append(
                        CheckResult(
                            recipient=raw, allowed=True, basis=decision.basis, reason=None, unsubscribe_url=url
                        )
                    )
            else:
                append(
                    CheckResult(
                        recipient=raw, allowed=decision.allowed, basis=decision.basis, reason=decision.reason
                    )
                )
        return results, outcomes

    async def _count(
        self,
        principal: Principal,
        channel: str,
        campaign_id: int | None,
        outcomes: Counter[Decision],
        now: datetime,
    ) -> None:
        """One statement adds the whole batch to the day's counters (list health reads them)."""
        allowed = [d.allowed for d in outcomes]
        labels = [_outcome(d) for d in outcomes]
        counts = list(outcomes.values())
        await self._pool.execute(
            self._queries.add_check_counts,
            principal.tenant_id,
            now.date(),
            channel,
            campaign_id or 0,
            allowed,
            labels,
            counts,
        )
        for decision, n in outcomes.items():
            metrics.CHECKED_RECIPIENTS.labels(channel, str(decision.allowed).lower(), _outcome(decision)).inc(n)


def _outcome(decision: Decision) -> str:
    return (decision.basis if decision.allowed else decision.reason) or "unknown"


def _response(
    results: list[CheckResult], outcomes: Counter[Decision], request: CheckRequest
) -> CheckResponse:
    metrics.CHECKS.labels(request.channel, request.purpose).inc()
    reasons: dict[str, int] = {}
    bases: dict[str, int] = {}
    allowed = denied = 0
    for decision, n in outcomes.items():
        if decision.allowed:
            allowed += n
            bases[_outcome(decision)] = bases.get(_outcome(decision), 0) + n
        else:
            denied += n
            reasons[_outcome(decision)] = reasons.get(_outcome(decision), 0) + n
    return CheckResponse(
        results=results,
        summary=CheckSummary(allowed=allowed, denied=denied, reasons=reasons, bases=bases),
    )
