"""Topics: what a tenant sends about, each saying whether a customer relationship is a basis for it."""

from __future__ import annotations

from datetime import datetime

import msgspec

from suppress.models import TopicName
from suppress.tenants import Principal
from suppress.writing import Inbound, WriteCore


class TopicIn(Inbound, frozen=True):
    name: TopicName
    soft_opt_in: bool


class Topic(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    soft_opt_in: bool
    created_at: datetime


class TopicWrites(WriteCore):
    """Creating and listing topics."""

    async def save_topic(self, principal: Principal, data: TopicIn) -> tuple[Topic, bool]:
        """Create a topic or change its soft opt-in flag; says whether it was created."""
        row = await self._pool.fetchrow(
            self._q.create_topic, principal.tenant_id, data.name, data.soft_opt_in
        )
        assert row is not None
        return Topic(name=row["name"], soft_opt_in=row["soft_opt_in"], created_at=row["created_at"]), row[
            "created"
        ]

    async def list_topics(self, principal: Principal) -> list[Topic]:
        rows = await self._pool.fetch(self._q.list_topics, principal.tenant_id)
        return [Topic(name=r["name"], soft_opt_in=r["soft_opt_in"], created_at=r["created_at"]) for r in rows]
