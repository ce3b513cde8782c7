"""Bulk import uploads, their progress and error reports, and the streaming suppression export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType, Schema
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream
from multipart import MultipartError, MultipartSegment, PushMultipartParser  # type: ignore[import-untyped]

from suppress.api.auth import requires
from suppress.api.contract import documented
from suppress.errors import MalformedRequest
from suppress.imports.exports import MEDIA_TYPES, ExportFormat, export_suppressions
from suppress.imports.records import ImportFormat, ImportKind, ImportOptions, ProviderList
from suppress.imports.uploads import Imports, ImportView, UploadTooLarge
from suppress.models import Channel, SuppressionReason
from suppress.spreadsheets import CSV_MEDIA_TYPE
from suppress.tenants import Principal

# Room for multipart headers and boundaries on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024
_FILE = Schema(type=OpenAPIType.STRING, description="the file: UTF-8 CSV or NDJSON, or a provider's export")
UPLOAD_BODY = {
    "text/csv": _FILE,
    "application/x-ndjson": _FILE,
    "application/octet-stream": _FILE,
    "multipart/form-data": Schema(
        type=OpenAPIType.OBJECT,
        required=["file"],
        properties={"file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)},
    ),
}


class _Body:
    """The file of an upload as it streams in: the raw body, or the first file part of a
    multipart/form-data body (parsed incrementally, never held whole)."""

    def __init__(self, request: Request[Any, Any, Any], limit: int, filename: str | None) -> None:
        self._request = request
        self._limit = limit
        self.filename = filename

    def __aiter__(self) -> AsyncIterator[bytes]:
        content_type = self._request.headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            return self._multipart(content_type)
        return self._raw()

    async def _raw(self) -> AsyncIterator[bytes]:
        async for chunk in self._request.stream():
            yield chunk

    async def _multipart(self, content_type: str) -> AsyncIterator[bytes]:
        boundary = _boundary(content_type)
        received = 0
        state = "before"  # before the file part, in it, after it
        try:
            with PushMultipartParser(boundary, max_segment_count=32) as parser:
                async for chunk in self._request.stream():
                    received += len(chunk)
                    if received > self._limit + MULTIPART_OVERHEAD:
                        raise UploadTooLarge(f"the upload is larger than {self._limit} bytes")
                    for event in parser.parse(chunk):
                        if isinstance(event, MultipartSegment):
                            if state == "before" and (event.filename is not None or event.name == "file"):
                                state = "in"
                                self.filename = self.filename or event.filename
                        elif event is None:
                            state = "after" if state == "in" else state
                        elif state == "in":
                            yield bytes(event)
                for event in parser.parse(b""):
                    if state == "in" and event:
                        yield bytes(event)
        except MultipartError as exc:
            raise MalformedRequest(f"the multipart body is malformed: {exc}") from None
        if state == "before":
            raise MalformedRequest("the multipart body has no file part (send the file as `file`)")


def _boundary(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "boundary" and value:
            return value.strip('"')
    raise MalformedRequest("multipart/form-data without a boundary")


@post(
    "/v1/imports",
    status_code=202,
    summary="Upload a file to import",
    tags=["imports"],
    request_max_body_size=None,
    opt=documented(
        body=UPLOAD_BODY,  # read from the request as it streams in
        links={
            202: [
                ("GET", "/v1/imports/{import_id}", {"import_id": "$response.body#/id"}),
                ("GET", "/v1/imports/{import_id}/errors", {"import_id": "$response.body#/id"}),
            ]
        },
    ),
    description=(
        "The file is the raw body (any content type but multipart) or the `file` part of a "
        "multipart/form-data body; what it holds is said in query parameters. `kind`: suppressions, "
        "consents or customers. `format`: csv, ndjson, or a provider's own suppression export "
        "(sendgrid, mailgun, ses; kind=suppressions). The file is stored before the 202; a worker "
        "imports it in batches. Follow it at the `Location`. UTF-8, at most SUPPRESS_IMPORT_MAX_BYTES "
        "(512 MiB unless configured): larger is 413, empty or not UTF-8 or a first line that does not "
        "fit the format is 422, and nothing is stored. Layouts: docs/imports.md. Needs `write`."
    ),
    guards=[requires("write")],
)
async def create_import(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    imports: NamedDependency[Imports],
    kind: FromQuery[ImportKind],
    fmt: Annotated[ImportFormat, QueryParameter(name="format")],
    channel: FromQuery[Channel] = "email",
    reason: FromQuery[SuppressionReason | None] = None,
    topic: Annotated[str | None, QueryParameter(max_length=100)] = None,
    provider_list: Annotated[ProviderList | None, QueryParameter(name="list")] = None,
    source: Annotated[str | None, QueryParameter(max_length=100)] = None,
    filename: Annotated[str | None, QueryParameter(max_length=300)] = None,
) -> Response[ImportView]:
    service = imports
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > service.max_bytes + MULTIPART_OVERHEAD:
        raise UploadTooLarge(f"the upload is larger than {service.max_bytes} bytes")
    options = ImportOptions(
        kind=kind,
        format=fmt,
        channel=channel,
        reason=reason,
        topic=topic,
        list=provider_list,
        source=source,
    )
    body = _Body(request, service.max_bytes, filename)
    import_id = await service.create(principal.tenant_id, principal.actor, options, body, filename=filename)
    view = await service.get(principal.tenant_id, import_id)
    return Response(view, status_code=202, headers={"Location": f"/v1/imports/{import_id}"})


@get(
    "/v1/imports/{import_id:int}",
    summary="An import's progress, counts and first errors",
    tags=["imports"],
    description="Status (queued, running, done, failed), rows done / unchanged / failed, lines and "
    "bytes read of the total, and the first `errors` failed rows with their line numbers (all of "
    "them in `error_report`). Needs `read`.",
    guards=[requires("read")],
)
async def get_import(
    principal: NamedDependency[Principal],
    imports: NamedDependency[Imports],
    import_id: FromPath[int],
    errors: Annotated[int, QueryParameter(ge=0, le=1000)] = 100,
) -> ImportView:
    return await imports.get(principal.tenant_id, import_id, errors=errors)


@get(
    "/v1/imports/{import_id:int}/errors",
    summary="Download an import's error report (CSV)",
    tags=["imports"],
    description="Every row that was not imported: line, error, raw text. Needs `read`.",
    guards=[requires("read")],
    media_type="text/csv",
)
async def import_errors(
    principal: NamedDependency[Principal], imports: NamedDependency[Imports], import_id: FromPath[int]
) -> Stream:
    rows = await imports.error_report(principal.tenant_id, import_id)
    return Stream(
        rows,
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}-errors.csv"'},
    )


@get(
    "/v1/suppressions/export",
    summary="Export the suppressions in force (streamed CSV or NDJSON)",
    tags=["suppressions"],
    description="One consistent snapshot, oldest first, streamed as it is read. Columns: channel, "
    "address, reason, topic, since, expires_at, campaign, note (the CSV imports back as "
    "kind=suppressions). Erased recipients have no address and are left out. Needs `read`.",
    guards=[requires("read")],
    opt=documented(only_media_types={200: MEDIA_TYPES.values()}),
)
async def export(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    fmt: Annotated[ExportFormat, QueryParameter(name="format")] = "csv",
    channel: FromQuery[Channel | None] = None,
    reason: FromQuery[SuppressionReason | None] = None,
) -> Stream:
    app_state = request.app.state
    route = await app_state.reads.route(principal)  # a replica within the lag bound, or the primary
    rows = export_suppressions(
        route.pool,
        app_state.queries,
        principal.tenant_id,
        fmt,
        channel=channel,
        reason=reason,
        now=datetime.now(UTC),
    )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Stream(
        rows,
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="suppressions-{stamp}.{fmt}"'},
    )


routes = [create_import, get_import, import_errors, export]
