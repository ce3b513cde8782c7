"""What every write module shares: request bodies that refuse unknown fields, the result of a
single write, and the core each intent module builds on — the recipient's key, topic and campaign
lookups, and the one write path (`writes.Writer`) that applies the intents."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import msgspec
from msgspec import Meta

from suppress.addresses import AddressHasher, normalise
from suppress.errors import InvalidAddress, UnknownTopic
from suppress.models import Channel
from suppress.queue import Queue
from suppress.replicas import Reads
from suppress.sql import Queries
from suppress.tenants import Principal
from suppress.writes import Writer

SourceName = Annotated[str, Meta(min_length=1, max_length=100)]
NoticeVersion = Annotated[str, Meta(min_length=1, max_length=100)]


class Inbound(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are an error, not silently dropped."""


class WriteResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a write did: the ledger event it appended and its visible effect."""

    channel: Channel
    address: str
    event_id: int
    topic: str | None = None
    lifted_unsubscribe: bool = False
    consents_ended: int = 0


class WriteCore:
    """The shared core of the write modules, bound to a pool, the queries and the address hasher."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        hasher: AddressHasher,
        job_queue: Queue | None = None,
        reads: Reads | None = None,
    ) -> None:
        self._pool = pool
        self.reads = reads or Reads(pool)  # which pool the recipient view reads (replicas.py)
        self._q = queries
        self._hasher = hasher
        self._queue = job_queue
        self.writer = Writer(pool, queries, job_queue)

    # -- shared pieces ---------------------------------------------------------------------

    def key(self, principal: Principal, channel: str, raw: str) -> tuple[str, bytes]:
        """The normalised address and its keyed hash, or InvalidAddress."""
        normalised = normalise(channel, raw, principal.default_region)
        if normalised is None:
            kind = "email address" if channel == "email" else "phone number"
            raise InvalidAddress(f"not a valid {kind}: {raw[:80]!r}")
        return normalised, self._hasher.hash(channel, normalised)

    async def topic_id(self, principal: Principal, name: str | None) -> int:
        """A topic's id (0 for "all topics" when no name is given), or UnknownTopic."""
        if name is None:
            return 0
        row = await self._pool.fetchrow(self._q.topic_by_name, principal.tenant_id, name)
        if row is None:
            raise UnknownTopic(f"no topic named {name!r}; create it with POST /v1/topics")
        return int(row["id"])

    async def campaign_id(self, principal: Principal, name: str | None) -> int | None:
        if name is None:
            return None
        campaign_id: int = await self._pool.fetchval(self._q.resolve_campaign, principal.tenant_id, name)
        return campaign_id
