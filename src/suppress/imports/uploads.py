"""Bulk imports: the upload stored durably before the 202, its progress, and its error report.

`Imports.create()` streams an upload into PostgreSQL (1 MiB chunks) inside one transaction while
checking it: size limit, UTF-8, a first line that fits the format. Any failure rolls back, so a
rejected upload leaves nothing behind. Then the `run_import` job is enqueued; the job itself is
`imports.runs.run_import()`. `Imports.get()` / `error_report()` show progress, counts and the rows
that failed, by line.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from suppress import queue
from suppress.config import DEFAULT_IMPORT_MAX_BYTES
from suppress.errors import InvalidInput, NotFound, SuppressError
from suppress.imports.batches import Connection
from suppress.imports.formats import Lines, NeedMore, Reader
from suppress.imports.records import PROVIDER_FORMATS, PROVIDER_LISTS, FormatError, ImportOptions
from suppress.imports.runs import CHUNK_BYTES, import_job_id
from suppress.models import CHANNELS, SUPPRESSION_REASONS, TopicName
from suppress.spreadsheets import CsvWriter
from suppress.sql import Queries

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = DEFAULT_IMPORT_MAX_BYTES
FIRST_ERRORS = 100

ImportStatus = Literal["queued", "running", "done", "failed"]


class UploadTooLarge(SuppressError):
    """The upload is larger than the import size limit."""

    code = "upload_too_large"
    status = 413


class InvalidUpload(InvalidInput):
    """The upload cannot be imported as it is."""

    code = "invalid_upload"


class ImportErrorRow(msgspec.Struct, frozen=True, kw_only=True):
    """One record that was not imported: the line it starts on, why, and its text."""

    line: int
    error: str
    raw: str | None = None


class ImportView(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/imports/{id}: what an import is, how far it got, and the first rows that failed."""

    id: int
    kind: str
    format: str
    options: dict[str, Any]
    status: ImportStatus
    filename: str | None
    done: int
    unchanged: int
    failed: int
    lines_total: int
    lines_done: int
    bytes_total: int
    bytes_done: int
    progress: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    errors: list[ImportErrorRow]
    error_report: str


def check_options(options: ImportOptions) -> None:
    """Reject combinations an import cannot honour (InvalidInput)."""
    fmt, kind = options.format, options.kind
    if fmt in PROVIDER_FORMATS:
        if kind != "suppressions":
            raise InvalidInput(f"format={fmt} holds suppressions: use kind=suppressions")
        if options.channel != "email":
            raise InvalidInput(f"format={fmt} holds email addresses: leave out channel or use email")
        if options.list == "blocks":
            raise InvalidInput(
                "SendGrid blocks are messages a receiving server refused, not recipients to suppress; "
                "they are not imported"
            )
        if options.list is not None and options.list not in PROVIDER_LISTS[fmt]:
            allowed = ", ".join(PROVIDER_LISTS[fmt]) or "none (each row names its reason)"
            raise InvalidInput(f"list for format={fmt} is one of: {allowed}")
        if options.reason is not None:
            raise InvalidInput(f"format={fmt} maps each row's reason itself; leave out reason")
    elif options.list is not None:
        raise InvalidInput("list applies to the provider formats (sendgrid, mailgun) only")
    if options.channel not in CHANNELS:
        raise InvalidInput(f"channel must be one of {', '.join(CHANNELS)}")
    if options.reason is not None and (kind != "suppressions" or options.reason not in SUPPRESSION_REASONS):
        raise InvalidInput(
            f"reason applies to kind=suppressions and is one of {', '.join(SUPPRESSION_REASONS)}"
        )
    if options.topic is not None:
        if kind == "customers":
            raise InvalidInput("topic does not apply to kind=customers")
        try:
            msgspec.convert(options.topic, TopicName)
        except msgspec.ValidationError:
            raise InvalidInput(f"not a topic name: {options.topic[:100]!r}") from None
    if options.source is not None and (kind != "consents" or not 1 <= len(options.source) <= 100):
        raise InvalidInput("source applies to kind=consents and is 1 to 100 characters")


class Imports:
    """Uploads, progress and error reports; the job itself is `run_import()`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        job_queue: queue.Queue | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._pool = pool
        self._q = queries
        self._queue = job_queue
        self.max_bytes = max_bytes

    async def create(
        self,
        tenant_id: int,
        actor: str,
        options: ImportOptions,
        body: AsyncIterable[bytes],
        *,
        filename: str | None = None,
    ) -> int:
        """Store an upload and enqueue its job; returns the import's id. A rejected upload stores nothing."""
        check_options(options)
        async with self._pool.acquire() as conn, conn.transaction():
            import_id: int = await conn.fetchval(
                self._q.create_import,
                tenant_id,
                options.kind,
                options.format,
                msgspec.to_builtins(options),
                (filename or None) and filename[:300],
                actor,
            )
            upload = _Upload(conn, self._q, tenant_id, import_id, options, self.max_bytes)
            async for piece in body:
                await upload.add(piece)
            # a multipart body learns its file name from the part's header, after create_import
            late_name = getattr(body, "filename", None)
            await upload.seal(late_name[:300] if isinstance(late_name, str) and late_name else None)
        await self.enqueue(tenant_id, import_id, 0)
        return import_id

    async def enqueue(self, tenant_id: int, import_id: int, bytes_done: int) -> None:
        """Ask a worker to run (or go on with) an import; a lost enqueue is found by the cron."""
        if self._queue is None:
            return
        try:
            await queue.enqueue(
                self._queue,
                queue.JOB_RUN_IMPORT,
                tenant_id,
                import_id,
                job_id=import_job_id(tenant_id, import_id, bytes_done),
            )
        except Exception as exc:  # Redis down: resume_imports enqueues it later
            log.warning("could not enqueue import %s/%s (%s)", tenant_id, import_id, type(exc).__name__)

    async def get(self, tenant_id: int, import_id: int, *, errors: int = FIRST_ERRORS) -> ImportView:
        """One import's state with its first `errors` failed rows; NotFound for another tenant's."""
        row = await self._find(tenant_id, import_id)
        if row is None:
            raise NotFound(f"no import {import_id}")
        failed = await self._pool.fetch(self._q.import_errors_page, tenant_id, import_id, errors, -1)
        total = row["bytes_total"]
        return ImportView(
            id=row["id"],
            kind=row["kind"],
            format=row["format"],
            options={
                k: v for k, v in row["options"].items() if k not in ("kind", "format") and v is not None
            },
            status=row["status"],
            filename=row["filename"],
            done=row["rows_done"],
            unchanged=row["rows_unchanged"],
            failed=row["rows_failed"],
            lines_total=row["lines_total"],
            lines_done=row["lines_done"],
            bytes_total=total,
            bytes_done=row["bytes_done"],
            progress=1.0 if row["status"] == "done" else round(row["bytes_done"] / total, 4),
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            error=row["error"],
            errors=[ImportErrorRow(line=e["line"], error=e["message"], raw=e["raw"]) for e in failed],
            error_report=f"/v1/imports/{row['id']}/errors",
        )

    async def _find(self, tenant_id: int, import_id: int) -> asyncpg.Record | None:
        if not 0 < import_id < 2**63:  # never handed out, and past bigint the query would fail
            return None
        record: asyncpg.Record | None = await self._pool.fetchrow(self._q.import_by_id, tenant_id, import_id)
        return record

    async def error_report(self, tenant_id: int, import_id: int, *, page: int = 1000) -> AsyncIterator[bytes]:
        """Every failed row as CSV (line, error, raw), streamed page by page."""
        if await self._find(tenant_id, import_id) is None:
            raise NotFound(f"no import {import_id}")
        return self._error_rows(tenant_id, import_id, page)

    async def _error_rows(self, tenant_id: int, import_id: int, page: int) -> AsyncIterator[bytes]:
        writer = CsvWriter()
        header = writer.row(["line", "error", "raw"])
        after = -1
        while True:
            rows = await self._pool.fetch(self._q.import_errors_page, tenant_id, import_id, page, after)
            yield (header + writer.rows([r["line"], r["message"], r["raw"]] for r in rows)).encode()
            header = ""
            if len(rows) < page:
                return
            after = rows[-1]["ordinal"]


class _Upload:
    """Writes an upload's chunks while checking it: size, UTF-8, and that its start fits the format."""

    def __init__(
        self,
        conn: Connection,
        queries: Queries,
        tenant_id: int,
        import_id: int,
        options: ImportOptions,
        max_bytes: int,
    ) -> None:
        self._conn = conn
        self._q = queries
        self._tenant_id = tenant_id
        self._import_id = import_id
        self._options = options
        self._max = max_bytes
        self._pending = bytearray()
        self._seq = 0
        self._size = 0
        self._newlines = 0
        self._last = b""
        self._digest = hashlib.sha256()
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")

    async def add(self, piece: bytes) -> None:
        if not piece:
            return
        self._size += len(piece)
        if self._size > self._max:
            raise UploadTooLarge(f"the upload is larger than {self._max} bytes")
        try:
            self._utf8.decode(piece)
        except UnicodeDecodeError as exc:
            raise InvalidUpload(
                f"the upload is not UTF-8 text (byte {self._size - len(piece) + exc.start})"
            ) from None
        self._digest.update(piece)
        self._newlines += piece.count(b"\n")
        self._last = piece[-1:]
        self._pending += piece
        while len(self._pending) >= CHUNK_BYTES:
            await self._flush(bytes(self._pending[:CHUNK_BYTES]))
            del self._pending[:CHUNK_BYTES]

    async def seal(self, filename: str | None) -> None:
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InvalidUpload("the upload is not UTF-8 text (it ends inside a character)") from None
        if self._size == 0:
            raise InvalidUpload("the upload is empty")
        if self._pending or self._seq == 0:
            await self._flush(bytes(self._pending), final=True)
        lines = self._newlines + (0 if self._last == b"\n" else 1)
        await self._conn.execute(
            self._q.seal_import,
            self._tenant_id,
            self._import_id,
            self._size,
            lines,
            self._digest.digest(),
            filename,
        )

    async def _flush(self, chunk: bytes, *, final: bool = False) -> None:
        if self._seq == 0:
            self._check_start(chunk, final)
        await self._conn.execute(self._q.add_import_chunk, self._tenant_id, self._import_id, self._seq, chunk)
        self._seq += 1

    def _check_start(self, chunk: bytes, final: bool) -> None:
        """The first chunk must show the format's layout (a CSV header, a JSON shape)."""
        lines = Lines()
        try:
            lines.feed(chunk, final=final)
            Reader(self._options).read_layout(lines)
        except NeedMore:
            raise InvalidUpload("the first line is longer than 1 MiB") from None
        except FormatError as exc:
            raise InvalidUpload(str(exc)) from None
