"""One batch of an import: records checked the way the API checks them, then written through the
batched forms of the write statements (events + projection), with the checkpoint, in one transaction.

A batch is split into rounds so that no statement touches one recipient twice (the statements
rewrite each recipient's projection row once); rounds keep the file's order per recipient.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from suppress import metrics
from suppress.addresses import AddressHasher, normalise
from suppress.imports.records import (
    MAX_RAW,
    ConsentRecord,
    CustomerRecord,
    ImportOptions,
    Parsed,
    RowError,
    SuppressionRecord,
)
from suppress.models import TopicName
from suppress.sql import Queries

# A time "in the future" is a clock or data error; allow a little skew (as the API does).
CLOCK_SKEW = timedelta(minutes=5)
MAX_EVIDENCE_BYTES = 16_384
ERASED = "the address was erased; a consent cannot be recorded until an admin lifts the erasure"
_encode = msgspec.json.encode
Connection = asyncpg.Connection | PoolConnectionProxy


class LostLease(Exception):
    """Another runner took this import over; the batch was rolled back."""


class BatchCounts(msgspec.Struct, kw_only=True):
    done: int = 0
    unchanged: int = 0
    failed: int = 0


class PreparedBatch(msgspec.Struct, kw_only=True):
    """A checked batch: statement rows (ordinal, round key, values), rows in error, rows skipped."""

    batch: Sequence[Parsed]
    first_ordinal: int
    rows: list[tuple[int, tuple[Any, ...], tuple[Any, ...]]] = msgspec.field(default_factory=list)
    errors: list[tuple[int, int, str, str]] = msgspec.field(default_factory=list)
    skipped: int = 0


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    default_region: str
    soft_bounce_suppress_days: int
    require_notice_version: bool = False


class BatchWriter:
    """Checks and writes the batches of one import run; caches topic and campaign ids meanwhile."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        hasher: AddressHasher,
        tenant: Tenant,
        import_id: int,
        options: ImportOptions,
        actor: str,
    ) -> None:
        self._pool = pool
        self._q = queries
        self._hasher = hasher
        self._tenant = tenant
        self._import_id = import_id
        self._options = options
        self._actor = actor
        self._topics: dict[str, int | None] = {}
        self._campaigns: dict[str, int] = {}

    async def prepare(self, batch: Sequence[Parsed], first_ordinal: int, now: datetime) -> PreparedBatch:
        """Check every record of a batch and build its statement rows (no writes yet)."""
        await self._resolve_names(batch)
        prepared = PreparedBatch(batch=batch, first_ordinal=first_ordinal)
        for ordinal, parsed in enumerate(batch, start=first_ordinal):
            if parsed.record is None:
                prepared.errors.append((ordinal, parsed.line, parsed.error or "unreadable", parsed.raw))
                continue
            try:
                rows = self._prepare(parsed, ordinal, now)
            except RowError as exc:
                prepared.errors.append((ordinal, parsed.line, str(exc), _raw(parsed)))
                continue
            if not rows:
                prepared.skipped += 1  # e.g. a soft bounce whose suppression period already ran out
                continue
            prepared.rows.extend((ordinal, key, values) for key, values in rows)
        return prepared

    async def commit(
        self, prepared: PreparedBatch, position: tuple[int, int], token: str, lease: timedelta
    ) -> BatchCounts:
        """Write a prepared batch and move the checkpoint to `position`, in one transaction."""
        errors = list(prepared.errors)
        rows = prepared.rows
        counts = BatchCounts(unchanged=prepared.skipped)
        async with self._pool.acquire() as conn, conn.transaction():
            written, refused = await self._write_rounds(conn, rows)
            for ordinal in sorted(refused):
                parsed = prepared.batch[ordinal - prepared.first_ordinal]
                errors.append((ordinal, parsed.line, ERASED, _raw(parsed)))
            counts.failed = len(errors)
            if errors:
                await conn.execute(
                    self._q.add_import_errors,
                    self._tenant.id,
                    self._import_id,
                    [e[0] for e in errors],
                    [e[1] for e in errors],
                    [e[2] for e in errors],
                    [e[3] for e in errors],
                )
            records = {ordinal for ordinal, _, _ in rows} - refused
            counts.done = len(written)
            counts.unchanged += len(records) - len(written)
            moved = await conn.fetchval(
                self._q.checkpoint_import,
                self._tenant.id,
                self._import_id,
                token,
                lease,
                position[0],
                position[1],
                counts.done,
                counts.unchanged,
                counts.failed,
            )
            if moved is None:
                raise LostLease()
        metrics.WRITES.labels(f"import_{self._options.kind}").inc(counts.done)
        return counts

    # -- names ---------------------------------------------------------------------------------

    async def _resolve_names(self, batch: Sequence[Parsed]) -> None:
        """Look up the topics and campaigns the batch names (campaigns are created on first use)."""
        topics: set[str] = set()
        campaigns: set[str] = set()
        for parsed in batch:
            record = parsed.record
            if isinstance(record, SuppressionRecord | ConsentRecord) and record.topic:
                topics.add(record.topic)
            if isinstance(record, SuppressionRecord):
                topics.update(record.tags or ())
                if record.campaign:
                    campaigns.add(record.campaign)
        for name in topics - self._topics.keys():
            row = await self._pool.fetchrow(self._q.topic_by_name, self._tenant.id, name)
            self._topics[name] = None if row is None else int(row["id"])
        for name in campaigns - self._campaigns.keys():
            self._campaigns[name] = int(
                await self._pool.fetchval(self._q.resolve_campaign, self._tenant.id, name)
            )

    def _topic_id(self, name: str | None) -> int:
        if name is None:
            return 0
        topic_id = self._topics.get(name)
        if topic_id is None:
            try:
                msgspec.convert(name, TopicName)
            except msgspec.ValidationError:
                raise RowError(f"not a topic name: {name[:100]!r}") from None
            raise RowError(f"no topic named {name!r}; create it with POST /v1/topics")
        return topic_id

    # -- checks ----------------------------------------------------------------------------------

    def _key(self, channel: str, raw: str) -> tuple[str, bytes]:
        normalised = normalise(channel, raw, self._tenant.default_region)
        if normalised is None:
            kind = "email address" if channel == "email" else "phone number"
            raise RowError(f"not a valid {kind}: {raw[:80]!r}")
        return normalised, self._hasher.hash(channel, normalised)

    def _data(self, parsed: Parsed, evidence: dict[str, Any] | None = None) -> str:
        data: dict[str, Any] = {"import_id": self._import_id, "line": parsed.line}
        if evidence:
            data["evidence"] = evidence
        return _encode(data).decode()

    def _prepare(
        self, parsed: Parsed, ordinal: int, now: datetime
    ) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
        """The statement rows of one record, each with the key that must not repeat in a round."""
        record = parsed.record
        if isinstance(record, SuppressionRecord):
            return self._prepare_suppression(parsed, record, ordinal, now)
        if isinstance(record, ConsentRecord):
            return [self._prepare_consent(parsed, record, ordinal, now)]
        assert isinstance(record, CustomerRecord)
        return [self._prepare_customer(parsed, record, ordinal, now)]

    def _prepare_suppression(
        self, parsed: Parsed, record: SuppressionRecord, ordinal: int, now: datetime
    ) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
        normalised, digest = self._key(record.channel, record.address)
        at = _not_future(record.at or now, now)
        topics = self._tag_topics(record) if record.tags else [self._topic_id(record.topic)]
        if record.reason != "unsubscribed" and topics != [0]:
            raise RowError("only `unsubscribed` can be limited to a topic")
        expires_at = record.expires_at
        if expires_at is not None:
            if expires_at <= now:
                raise RowError("expires_at lies in the past")
            if topics != [0]:
                raise RowError("an unsubscribe from a topic does not expire; leave out expires_at")
        if record.reason == "soft_bounced" and expires_at is None:
            expires_at = at + timedelta(days=self._tenant.soft_bounce_suppress_days)
            if expires_at <= now:
                return []
        campaign_id = self._campaigns.get(record.campaign) if record.campaign else None
        data = self._data(parsed, record.evidence)
        return [
            (
                (record.channel, digest),
                (
                    ordinal,
                    record.channel,
                    digest,
                    normalised,
                    topic_id,
                    record.reason,
                    expires_at,
                    campaign_id,
                    record.note,
                    at,
                    data,
                ),
            )
            for topic_id in topics
        ]

    def _tag_topics(self, record: SuppressionRecord) -> list[int]:
        """Mailgun tags: each names a topic, or the unsubscribe covers all topics."""
        tags = record.tags or ()
        ids = [self._topics.get(tag) for tag in tags]
        if "*" in tags or any(i is None for i in ids):
            return [0]
        return sorted({i for i in ids if i is not None})

    def _prepare_consent(
        self, parsed: Parsed, record: ConsentRecord, ordinal: int, now: datetime
    ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        normalised, digest = self._key(record.channel, record.address)
        granted_at = _not_future(record.granted_at, now)
        if self._tenant.require_notice_version and not record.notice_version:
            raise RowError("this tenant requires notice_version on every consent (what the person was told)")
        evidence = _encode(record.evidence or {})
        if len(evidence) > MAX_EVIDENCE_BYTES:
            raise RowError(f"evidence is larger than {MAX_EVIDENCE_BYTES} bytes as JSON")
        return (
            (record.channel, digest),
            (
                ordinal,
                record.channel,
                digest,
                normalised,
                self._topic_id(record.topic),
                record.partners,
                record.source or self._options.source or "import",
                record.notice_version,
                evidence.decode(),
                granted_at,
                _encode(
                    {"import_id": self._import_id, "line": parsed.line, "recorded_via": "import"}
                ).decode(),
            ),
        )

    def _prepare_customer(
        self, parsed: Parsed, record: CustomerRecord, ordinal: int, now: datetime
    ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        normalised, digest = self._key(record.channel, record.address)
        return (
            (record.customer_ref, record.channel, digest),
            (
                ordinal,
                record.customer_ref,
                record.channel,
                digest,
                normalised,
                record.collected_in_sale,
                record.event,
                _not_future(record.at, now),
                self._data(parsed),
            ),
        )

    # -- writes ----------------------------------------------------------------------------------

    async def _write_rounds(
        self, conn: Connection, rows: list[tuple[int, tuple[Any, ...], tuple[Any, ...]]]
    ) -> tuple[set[int], set[int]]:
        """Run the kind's statement once per round; returns the ordinals of the records that wrote
        and of those refused (a consent for an erased recipient)."""
        rounds: list[list[tuple[Any, ...]]] = []
        seen: dict[tuple[Any, ...], int] = {}
        for _, key, values in rows:
            index = seen.get(key, 0)
            seen[key] = index + 1
            if index == len(rounds):
                rounds.append([])
            rounds[index].append(values)
        kind = self._options.kind
        written: set[int] = set()
        refused: set[int] = set()
        tenant_id = self._tenant.id
        for statement_rows in rounds:
            columns = [list(c) for c in zip(*statement_rows, strict=True)]
            if kind == "suppressions":
                row = await conn.fetchrow(
                    self._q.import_suppressions, tenant_id, *columns, "import", self._actor
                )
            elif kind == "consents":
                row = await conn.fetchrow(self._q.import_consents, tenant_id, *columns, self._actor)
                assert row is not None
                refused.update(row["erased"])
            else:
                row = await conn.fetchrow(
                    self._q.import_customer_links, tenant_id, *columns, "import", self._actor
                )
            assert row is not None
            written.update(row["written"])
        if kind == "customers" and rows:
            refs = [values[1] for _, _, values in rows]
            await conn.execute(
                self._q.import_customers,
                tenant_id,
                refs,
                [values[6] for _, _, values in rows],
                [values[7] for _, _, values in rows],
            )
            await conn.execute(self._q.refresh_import_customers, tenant_id, sorted(set(refs)))
        return written, refused


def _not_future(at: datetime, now: datetime) -> datetime:
    if at > now + CLOCK_SKEW:
        raise RowError(f"{at.isoformat()} lies in the future")
    return at


def _raw(parsed: Parsed) -> str:
    """The text of a record that was read but not accepted, as the error report shows it."""
    return parsed.raw.rstrip("\r\n")[:MAX_RAW]
