"""Streaming export of the suppressions in force, as CSV or NDJSON, in bounded memory.

Rows come from a server-side cursor (PREFETCH rows per round trip) inside one read transaction, so
the export is one consistent snapshot however long it runs, and are encoded into pieces of about
PIECE_BYTES that the HTTP layer sends as they are ready. The CSV has the columns of a
`kind=suppressions` import, so an export can be imported elsewhere as it is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from suppress.spreadsheets import inert_cell
from suppress.sql import Queries

ExportFormat = Literal["csv", "ndjson"]
COLUMNS = ("channel", "address", "reason", "topic", "since", "expires_at", "campaign", "note")
PREFETCH = 2000
PIECE_BYTES = 64 * 1024
# Litestar adds `; charset=utf-8` to text/* types itself.
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv", "ndjson": "application/x-ndjson"}

_Encoder = Callable[["asyncpg.Record | None"], bytes]


class ExportedSuppression(msgspec.Struct, frozen=True, kw_only=True):
    """One line of an NDJSON export."""

    channel: str
    address: str
    reason: str
    topic: str | None
    since: datetime
    expires_at: datetime | None
    campaign: str | None
    note: str | None


async def export_suppressions(
    pool: asyncpg.Pool,
    queries: Queries,
    tenant_id: int,
    fmt: ExportFormat,
    *,
    channel: str | None,
    reason: str | None,
    now: datetime,
    prefetch: int = PREFETCH,
) -> AsyncIterator[bytes]:
    """The tenant's suppressions in force at `now` (optionally one channel / reason), oldest first."""
    encode = _csv_encoder() if fmt == "csv" else _ndjson_encoder()
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        piece = bytearray(encode(None))
        cursor = conn.cursor(queries.export_suppressions, tenant_id, channel, reason, now, prefetch=prefetch)
        async for row in cursor:
            piece += encode(row)
            if len(piece) >= PIECE_BYTES:
                yield bytes(piece)
                piece.clear()
        if piece:
            yield bytes(piece)


def _csv_encoder() -> _Encoder:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def encode(row: asyncpg.Record | None) -> bytes:
        if row is None:
            writer.writerow(COLUMNS)
        else:
            writer.writerow(
                [
                    row["channel"],
                    row["address"],
                    row["reason"],
                    row["topic"] or "",
                    row["since"].isoformat(),
                    row["expires_at"].isoformat() if row["expires_at"] else "",
                    row["campaign"] or "",
                    inert_cell(row["note"] or ""),
                ]
            )
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode()

    return encode


def _ndjson_encoder() -> _Encoder:
    encoder = msgspec.json.Encoder()

    def encode(row: asyncpg.Record | None) -> bytes:
        if row is None:
            return b""
        return encoder.encode(ExportedSuppression(**dict(row.items()))) + b"\n"

    return encode
