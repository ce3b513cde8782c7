"""The import job: read a stored upload from its checkpoint and write it batch by batch.

`run_import()` takes a lease on the import, reads the stored chunks from the checkpoint with the
streaming parser (`imports.formats`), and writes batches of BATCH_ROWS records through the batched
write statements (`imports.batches`); each batch moves the checkpoint in its own transaction, so a
killed runner loses at most the batch in flight and a re-run never writes a batch twice. Memory
stays bounded by one chunk plus one batch (and the next batch, read while the last one is written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import msgspec

from suppress.addresses import AddressHasher
from suppress.imports.batches import BatchCounts, BatchWriter, LostLease, Tenant
from suppress.imports.formats import Lines, NeedMore, Reader
from suppress.imports.records import FormatError, ImportOptions, Parsed
from suppress.sql import Queries

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
# Records per batch (one transaction). A batch holds its recipients' write locks until it commits,
# so a one-click of one of them waits that long (well under a second); larger batches spread each
# statement's fixed costs further (5 000 against 1 000: ~1.5× the rows/s, measured).
BATCH_ROWS = 5000
# A runner renews its lease with every batch; a killed runner's import is free again after this.
LEASE = timedelta(seconds=60)
# Claims in a row without a committed batch before an import is given up as failed.
MAX_STALLS = 10
# Failures that come from the file's content, not from an outage: the import ends `failed` with the
# reason at once instead of being retried (a line past the length limit, undecodable text, ...).
CONTENT_ERRORS: tuple[type[Exception], ...] = (
    FormatError,
    RecursionError,
    UnicodeDecodeError,
    msgspec.DecodeError,
)


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """Where a running import stands after a batch (for progress bars)."""

    bytes_done: int
    bytes_total: int
    lines_done: int
    done: int
    unchanged: int
    failed: int


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """How one run of the job ended: `done`, `failed`, `more` (time slice used up), `busy`
    (another runner holds the lease), `gone` (no such import) or `finished` (already over)."""

    status: Literal["done", "failed", "more", "busy", "gone", "finished"]
    bytes_done: int = 0
    batches: int = 0


def import_job_id(tenant_id: int, import_id: int, bytes_done: int) -> str:
    """The job id of the run that starts at a checkpoint: repeats at the same point run once."""
    return f"import:{tenant_id}:{import_id}:{bytes_done}"


async def run_import(
    pool: asyncpg.Pool,
    queries: Queries,
    hasher: AddressHasher,
    tenant_id: int,
    import_id: int,
    *,
    deadline: float | None = None,
    batch_rows: int = BATCH_ROWS,
    on_progress: Callable[[Progress], Any] | None = None,
) -> RunResult:
    """Run an import from its checkpoint until it is done or `deadline` (time.monotonic()) passes."""
    token = secrets.token_urlsafe(16)
    claim = await pool.fetchrow(queries.claim_import, tenant_id, import_id, token, LEASE)
    if claim is None:
        row = await pool.fetchrow(queries.import_by_id, tenant_id, import_id)
        if row is None:
            return RunResult(status="gone")
        return RunResult(status="busy" if row["status"] in ("queued", "running") else "finished")
    if claim["stalls"] > MAX_STALLS:
        await _finish(
            pool, queries, tenant_id, import_id, token, "failed", "gave up: no progress in many attempts"
        )
        return RunResult(status="failed", bytes_done=claim["bytes_done"])
    run = _Run(pool, queries, hasher, tenant_id, import_id, token, claim, batch_rows, on_progress)
    try:
        return await run.go(deadline)
    except LostLease:
        log.warning("import %s/%s: lease lost to another runner", tenant_id, import_id)
        return RunResult(status="busy", bytes_done=run.bytes_done, batches=run.batches)
    except CONTENT_ERRORS as exc:
        # the file itself is the problem: running it again would fail the same way
        reason = str(exc)[:500] or type(exc).__name__
        log.warning("import %s/%s failed: %s", tenant_id, import_id, reason)
        await _finish(pool, queries, tenant_id, import_id, token, "failed", reason)
        return RunResult(status="failed", bytes_done=run.bytes_done, batches=run.batches)
    except BaseException as exc:
        # Free the import for the next attempt now instead of when the lease runs out.
        try:
            await pool.execute(
                queries.release_import, tenant_id, import_id, token, f"{type(exc).__name__}: {exc}"[:500]
            )
        except Exception:  # the database may be the reason; the lease then simply expires
            log.debug("could not release import %s/%s", tenant_id, import_id)
        raise


async def _finish(
    pool: asyncpg.Pool,
    queries: Queries,
    tenant_id: int,
    import_id: int,
    token: str | None,
    status: str,
    error: str | None,
) -> None:
    await pool.execute(queries.finish_import, tenant_id, import_id, token, status, error)


class _Run:
    """One claim of an import: read from the checkpoint, write batch by batch."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        hasher: AddressHasher,
        tenant_id: int,
        import_id: int,
        token: str,
        claim: asyncpg.Record,
        batch_rows: int,
        on_progress: Callable[[Progress], Any] | None,
    ) -> None:
        self._pool = pool
        self._q = queries
        self._hasher = hasher
        self._tenant_id = tenant_id
        self._import_id = import_id
        self._token = token
        self._claim = claim
        self._batch_rows = batch_rows
        self._on_progress = on_progress
        self._options = msgspec.convert(claim["options"], ImportOptions)
        self._total = claim["bytes_total"]
        self._next_seq = 0
        self._skip = 0
        self.bytes_done = claim["bytes_done"]
        self.batches = 0
        self._positions: list[tuple[int, int]] = []
        self._counts: list[int] = [0, 0, 0]
        self._error: str | None = None

    async def go(self, deadline: float | None) -> RunResult:
        tenant_row = await self._pool.fetchrow(self._q.import_tenant, self._tenant_id)
        assert tenant_row is not None
        tenant = Tenant(
            id=self._tenant_id,
            default_region=tenant_row["default_region"],
            soft_bounce_suppress_days=tenant_row["soft_bounce_suppress_days"],
            require_notice_version=tenant_row["require_notice_version"],
        )
        claim = self._claim
        writer = BatchWriter(
            self._pool,
            self._q,
            self._hasher,
            tenant,
            self._import_id,
            self._options,
            claim["actor"] or "import",
        )
        reader = Reader(self._options)
        lines = Lines()
        while True:
            try:
                reader.read_layout(lines)
                break
            except NeedMore:
                await self._feed(lines)
            except FormatError as exc:
                await self._finish("failed", str(exc))
                return RunResult(status="failed")
        if claim["bytes_done"] > lines.position()[0]:
            lines = self._seek(claim["bytes_done"], claim["lines_done"])
        ordinal = claim["rows_done"] + claim["rows_unchanged"] + claim["rows_failed"]
        self._counts = [claim["rows_done"], claim["rows_unchanged"], claim["rows_failed"]]
        # While one batch is written, the next is read and checked: PostgreSQL and Python overlap.
        # Batches still commit one after another, in file order.
        writing: asyncio.Task[BatchCounts] | None = None
        try:
            while True:
                batch: list[Parsed] = []
                end = failure = False
                while len(batch) < self._batch_rows:
                    try:
                        parsed = reader.read(lines)
                    except NeedMore:
                        await self._feed(lines)
                        continue
                    except FormatError as exc:
                        failure, self._error = True, str(exc)
                        break
                    if parsed is None:
                        end = True
                        break
                    batch.append(parsed)
                if failure:
                    if writing is not None:
                        await self._landed(writing)
                    await self._finish("failed", self._error)
                    return RunResult(status="failed", bytes_done=self.bytes_done, batches=self.batches)
                position = lines.position()
                prepared = await writer.prepare(batch, ordinal, datetime.now(UTC))
                ordinal += len(batch)
                if writing is not None:
                    await self._landed(writing)
                writing = asyncio.create_task(writer.commit(prepared, position, self._token, LEASE))
                writing.add_done_callback(_retrieve)
                self._positions.append(position)
                if end:
                    await self._landed(writing)
                    writing = None
                    await self._finish("done", None)
                    return RunResult(status="done", bytes_done=self.bytes_done, batches=self.batches)
                if deadline is not None and time.monotonic() >= deadline:
                    await self._landed(writing)
                    writing = None
                    await self._pool.execute(
                        self._q.release_import, self._tenant_id, self._import_id, self._token, None
                    )
                    return RunResult(status="more", bytes_done=self.bytes_done, batches=self.batches)
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writing

    async def _landed(self, writing: asyncio.Task[BatchCounts]) -> None:
        """Wait for the batch being written, then count it and report progress."""
        counts = await writing
        position = self._positions.pop(0)
        self.bytes_done = position[0]
        self.batches += 1
        done, unchanged, failed = self._counts
        self._counts = [done + counts.done, unchanged + counts.unchanged, failed + counts.failed]
        if self._on_progress is not None:
            self._on_progress(
                Progress(
                    bytes_done=position[0],
                    bytes_total=self._total,
                    lines_done=position[1],
                    done=self._counts[0],
                    unchanged=self._counts[1],
                    failed=self._counts[2],
                )
            )

    async def _finish(self, status: str, error: str | None) -> None:
        await _finish(self._pool, self._q, self._tenant_id, self._import_id, self._token, status, error)

    def _seek(self, offset: int, line: int) -> Lines:
        """Read on from a checkpoint: a record boundary at `offset`, after `line` lines."""
        self._next_seq, self._skip = divmod(offset, CHUNK_BYTES)
        return Lines(offset, line)

    async def _feed(self, lines: Lines) -> None:
        """Give the reader the next stored chunk (each fetched once per run, then dropped)."""
        data = await self._pool.fetchval(
            self._q.import_chunk, self._tenant_id, self._import_id, self._next_seq
        )
        if data is None:
            lines.feed(b"", final=True)
            return
        start = self._next_seq * CHUNK_BYTES
        self._next_seq += 1
        if self._skip:
            data, self._skip = data[self._skip :], 0
        lines.feed(data, final=start + CHUNK_BYTES >= self._total)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a batch write's failure as seen when the run ends before awaiting it."""
    if not task.cancelled():
        task.exception()
