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
    active_suppressions: list[str] = msgspec.field(default_factory=list)
    consents: list[dict[str, Any]] = msgspec.field(default_factory=list)
    suppressions: list[dict[str, Any]] = msgspec.field(default_factory=list)
    customers: list[dict[str, Any]] = msgspec.field(default_factory=list)
    events: list[dict[str, Any]] = msgspec.field(default_factory=list)


class Recipients(TopicWrites, ConsentWrites, CustomerWrites):
    """The write side of the service and the recipient view."""

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

        async def read(pool: asyncpg.Pool) -> tuple[Any, list[Any], Any, list[Any]]:
            async with pool.acquire() as conn:
                row = await conn.fetchrow(self._q.recipient_state, *args)
                topics = await conn.fetch(self._q.list_topics, principal.tenant_id)
                if row is None:
                    return row, topics, None, []
                details = await conn.fetchrow(self._q.recipient_details, *args)
                history = await conn.fetch(self._q.recipient_events, *args, events)
            return row, topics, details, history

        row, topics, details, history = await self.reads.run(principal, read)
        state = None
        if row is not None:
            state = RecipientState(
                row["suppression_reasons"],
                row["suppression_expires"],
                row["unsubscribed_topics"],
                row["consent_topics"],
                row["partner_consent_topics"],
                row["collected_in_sale"],
                row["agreement_open"],
                row["last_purchase_at"],
                row["restricted_at"] is not None,
                row["erased_at"] is not None,
            )
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
            known=row is not None,
            marketing=marketing,
            restricted=bool(state and state.restricted),
            erased=bool(state and state.erased),
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
