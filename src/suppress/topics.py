"""Topics: what a tenant sends about, each saying whether a customer relationship is a basis for it,
with the label and description the recipient's pages show for it in each language."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from suppress.models import TopicName
from suppress.tenants import Principal
from suppress.writing import Inbound, WriteCore


class TopicText(Inbound, frozen=True):
    """A topic in one language: a display label and a short description."""

    label: Annotated[str, Meta(min_length=1, max_length=100)]
    description: Annotated[str, Meta(max_length=300)] = ""


class TopicDisplay(Inbound, frozen=True, omit_defaults=True):
    """A topic's texts per language of the recipient's pages (nb, en); a missing one falls back to
    the other language, then to the topic's name."""

    nb: TopicText | None = None
    en: TopicText | None = None


class TopicIn(Inbound, frozen=True):
    name: TopicName
    soft_opt_in: bool
    #: left out on an update: the texts stay as they are
    display: TopicDisplay | None = None


class Topic(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    soft_opt_in: bool
    display: TopicDisplay
    created_at: datetime


def _topic(row: Any) -> Topic:
    return Topic(
        name=row["name"],
        soft_opt_in=row["soft_opt_in"],
        display=msgspec.convert(row["display"] or {}, TopicDisplay),
        created_at=row["created_at"],
    )


class TopicWrites(WriteCore):
    """Creating and listing topics."""

    async def save_topic(self, principal: Principal, data: TopicIn) -> tuple[Topic, bool]:
        """Create a topic or change its soft opt-in flag (and its texts, when given); says whether
        it was created."""
        display = None if data.display is None else msgspec.to_builtins(data.display)
        row = await self._pool.fetchrow(
            self._q.create_topic, principal.tenant_id, data.name, data.soft_opt_in, display
        )
        assert row is not None
        return _topic(row), row["created"]

    async def list_topics(self, principal: Principal) -> list[Topic]:
        rows = await self._pool.fetch(self._q.list_topics, principal.tenant_id)
        return [_topic(r) for r in rows]
