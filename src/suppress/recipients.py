"""The recipient: every write that changes what the check decides, gathered in one service
(`Recipients`: topics, suppressions, consents and customers, each in its own module), and the read
that explains one recipient's state and the decision per topic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from suppress.consents import ConsentWrites
from suppress.customers import CustomerWrites
from suppress.decisions import load_state
from suppress.models import Basis, Channel, Reason
from suppress.policy import MessageContext, RecipientState, active_suppressions, decide
from suppress.tenants import Principal
from suppress.topics import TopicWrites


class DecisionView(msgspec.Struct, frozen=True, kw_only=True):
    topic: str | None
    allowed: bool
    basis: Basis | None
    reason: Reason | None


class RecipientView(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/recipients/{channel}/{address}: the state and the history that explains it."""

    channel: Channel
    address: str
    known: bool
    marketing: list[DecisionView]
    restricted: bool = False
    erased: bool = False
    #: the latest objection (GDPR Art. 21) of a customer linked to this address, if any
    objected_at: datetime | None = None
    active_suppressions: list[str] = msgspec.field(default_factory=list)
    consents: list[dict[str, Any]] = msgspec.field(default_factory=list)
    suppressions: list[dict[str, Any]] = msgspec.field(default_factory=list)
    customers: list[dict[str, Any]] = msgspec.field(default_factory=list)
    events: list[dict[str, Any]] = msgspec.field(default_factory=list)


class Recipients(TopicWrites, ConsentWrites, CustomerWrites):
    """The write side of the service and the recipient view."""

    async def state(self, principal: Principal, channel: str, address_hash: bytes) -> RecipientState | None:
        """A recipient's decision input, as the check reads it; None when nothing is known."""
        return await load_state(self._pool, self._q, principal.tenant_id, channel, address_hash)

    async def explain(
        self,
        principal: Principal,
        channel: Channel,
        raw_address: str,
        now: datetime,
        *,
        events: int = 1000,
    ) -> RecipientView:
        """A recipient's state, the marketing decision per topic, and the ledger behind it."""
        normalised, digest = self.key(principal, channel, raw_address)
        args = (principal.tenant_id, channel, digest)

        async def read(pool: asyncpg.Pool) -> tuple[RecipientState | None, list[Any], Any, list[Any]]:
            async with pool.acquire() as conn:
                # the decision input exactly as the check reads it (suppress.decisions)
                state = await load_state(conn, self._q, *args)
                topics = await conn.fetch(self._q.list_topics, principal.tenant_id)
                if state is None:
                    return state, topics, None, []
                details = await conn.fetchrow(self._q.recipient_details, *args)
                history = await conn.fetch(self._q.recipient_events, *args, events)
            return state, topics, details, history

        state, topics, details, history = await self.reads.run(principal, read)
        marketing = []
        for topic_id, topic_name, soft in [(None, None, False)] + [
            (t["id"], t["name"], t["soft_opt_in"]) for t in topics
        ]:
            message = MessageContext(purpose="marketing", topic_id=topic_id, topic_soft_opt_in=soft)
            decision = decide(principal.policy, message, state, now)
            marketing.append(
                DecisionView(
                    topic=topic_name,
                    allowed=decision.allowed,
                    basis=decision.basis,
                    reason=decision.reason,
                )
            )
        return RecipientView(
            channel=channel,
            address=normalised,
            known=state is not None,
            marketing=marketing,
            restricted=bool(state and state.restricted),
            erased=bool(state and state.erased),
            objected_at=state.objected_at if state else None,
            active_suppressions=active_suppressions(state, now) if state else [],
            consents=details["consents"] if details else [],
            suppressions=details["suppressions"] if details else [],
            customers=details["customers"] if details else [],
            events=[
                {
                    "id": e["id"],
                    "kind": e["kind"],
                    "topic": e["topic"],
                    "campaign": e["campaign"],
                    "source": e["source"],
                    "actor": e["actor"],
                    "occurred_at": e["occurred_at"],
                    "recorded_at": e["recorded_at"],
                    "data": e["data"],
                    "personal": e["personal"],
                }
                for e in history
            ],
        )
