"""One batch of an import: each record checked by the rules the API uses (`intents.py`) and planned
as intents, then applied by the one write path (`writes.Writer`) with the error rows and the
checkpoint, in one transaction: a killed run resumes without writing a batch twice. The write path
keeps the file's order per recipient.
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
from suppress.intents import (
    ConsentIntent,
    CustomerIntent,
    Intent,
    RuleBroken,
    SuppressIntent,
    check_consent,
    not_in_future,
    suppression_expiry,
)
from suppress.models import TopicName
from suppress.sql import Queries
from suppress.writes import ConsentOutcome, Writer, recipients_of

ERASED = "the address was erased; a consent cannot be recorded until an admin lifts the erasure"
Connection = asyncpg.Connection | PoolConnectionProxy


class LostLease(Exception):
    """Another runner took this import over; the batch was rolled back."""


class BatchCounts(msgspec.Struct, kw_only=True):
    done: int = 0
    unchanged: int = 0
    failed: int = 0


class PreparedBatch(msgspec.Struct, kw_only=True):
    """A checked batch: its intents with the ordinal of the record each came from, the rows in
    error, and the rows skipped."""

    batch: Sequence[Parsed]
    first_ordinal: int
    intents: list[Intent] = msgspec.field(default_factory=list)
    ordinals: list[int] = msgspec.field(default_factory=list)
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
        self._writer = Writer(pool, queries)

    async def prepare(self, batch: Sequence[Parsed], first_ordinal: int, now: datetime) -> PreparedBatch:
        """Check every record of a batch and plan its intents (no writes yet)."""
        await self._resolve_names(batch)
        prepared = PreparedBatch(batch=batch, first_ordinal=first_ordinal)
        for ordinal, parsed in enumerate(batch, start=first_ordinal):
            if parsed.record is None:
                prepared.errors.append((ordinal, parsed.line, parsed.error or "unreadable", parsed.raw))
                continue
            try:
                intents = self._prepare(parsed, now)
            except (RowError, RuleBroken) as exc:
                prepared.errors.append((ordinal, parsed.line, str(exc), _raw(parsed)))
                continue
            if not intents:
                prepared.skipped += 1  # e.g. a soft bounce whose suppression period already ran out
                continue
            prepared.intents.extend(intents)
            prepared.ordinals.extend([ordinal] * len(intents))
        return prepared

    async def commit(
        self, prepared: PreparedBatch, position: tuple[int, int], token: str, lease: timedelta
    ) -> BatchCounts:
        """Write a prepared batch and move the checkpoint to `position`, in one transaction."""
        counts = BatchCounts(unchanged=prepared.skipped)

        async def write(conn: Connection) -> BatchCounts:
            errors = list(prepared.errors)
            applied = await self._writer.apply_in(conn, self._tenant.id, prepared.intents)
            written: set[int] = set()
            refused: set[int] = set()
            for ordinal, outcome in zip(prepared.ordinals, applied.outcomes, strict=True):
                if isinstance(outcome, ConsentOutcome) and outcome.status == "erased":
                    refused.add(ordinal)
                elif getattr(outcome, "event_id", None) is not None:
                    written.add(ordinal)
            for ordinal in sorted(refused):
                parsed = prepared.batch[ordinal - prepared.first_ordinal]
                errors.append((ordinal, parsed.line, ERASED, _raw(parsed)))
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
            done = BatchCounts(
                done=len(written),
                unchanged=counts.unchanged + len(set(prepared.ordinals) - refused - written),
                failed=len(errors),
            )
            moved = await conn.fetchval(
                self._q.checkpoint_import,
                self._tenant.id,
                self._import_id,
                token,
                lease,
                position[0],
                position[1],
                done.done,
                done.unchanged,
                done.failed,
            )
            if moved is None:
                raise LostLease()
            return done

        counts = await self._writer.run(self._tenant.id, recipients_of(prepared.intents), write)
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

    def _data(self, parsed: Parsed, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"import_id": self._import_id, "line": parsed.line}
        if evidence:
            data["evidence"] = evidence
        return data

    def _prepare(self, parsed: Parsed, now: datetime) -> list[Intent]:
        """The intents of one record, checked by the same rules as the API's."""
        record = parsed.record
        if isinstance(record, SuppressionRecord):
            return self._prepare_suppression(parsed, record, now)
        if isinstance(record, ConsentRecord):
            return [self._prepare_consent(parsed, record, now)]
        assert isinstance(record, CustomerRecord)
        return [self._prepare_customer(parsed, record, now)]

    def _prepare_suppression(self, parsed: Parsed, record: SuppressionRecord, now: datetime) -> list[Intent]:
        normalised, digest = self._key(record.channel, record.address)
        at = not_in_future(record.at or now, now, "the time")
        topics = self._tag_topics(record) if record.tags else [self._topic_id(record.topic)]
        expires_at = suppression_expiry(
            record.reason,
            topic_given=topics != [0],
            expires_at=record.expires_at,
            at=at,
            now=now,
            soft_bounce_suppress_days=self._tenant.soft_bounce_suppress_days,
        )
        if expires_at is not None and expires_at <= now:
            return []  # a soft bounce whose suppression period already ran out
        campaign_id = self._campaigns.get(record.campaign) if record.campaign else None
        return [
            SuppressIntent(
                channel=record.channel,
                address_hash=digest,
                address=normalised,
                topic_id=topic_id,
                reason=record.reason,
                expires_at=expires_at,
                campaign_id=campaign_id,
                note=record.note,
                source="import",
                actor=self._actor,
                occurred_at=at,
                data=self._data(parsed, record.evidence),
                only_if_new=True,
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

    def _prepare_consent(self, parsed: Parsed, record: ConsentRecord, now: datetime) -> Intent:
        normalised, digest = self._key(record.channel, record.address)
        granted_at = not_in_future(record.granted_at, now, "granted_at")
        check_consent(
            notice_version=record.notice_version,
            evidence=record.evidence,
            require_notice_version=self._tenant.require_notice_version,
        )
        return ConsentIntent(
            channel=record.channel,
            address_hash=digest,
            address=normalised,
            topic_id=self._topic_id(record.topic),
            partners=record.partners,
            source=record.source or self._options.source or "import",
            notice_version=record.notice_version,
            evidence=record.evidence or {},
            granted_at=granted_at,
            actor=self._actor,
            data={"import_id": self._import_id, "line": parsed.line, "recorded_via": "import"},
            only_if_new=True,
        )

    def _prepare_customer(self, parsed: Parsed, record: CustomerRecord, now: datetime) -> Intent:
        normalised, digest = self._key(record.channel, record.address)
        return CustomerIntent(
            customer_ref=record.customer_ref,
            channel=record.channel,
            address_hash=digest,
            address=normalised,
            collected_in_sale=record.collected_in_sale,
            event=record.event,
            at=not_in_future(record.at, now, "the time"),
            source="import",
            actor=self._actor,
            data=self._data(parsed),
            only_if_new=True,
        )


def _raw(parsed: Parsed) -> str:
    """The text of a record that was read but not accepted, as the error report shows it."""
    return parsed.raw.rstrip("\r\n")[:MAX_RAW]
