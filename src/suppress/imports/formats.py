"""Reading an upload into records: our CSV and NDJSON, and the providers' own suppression exports.

Pure: no I/O. The upload arrives chunk by chunk (`Lines.feed`); a reader pulls complete lines and
raises `NeedMore` when the next record needs bytes not yet fed, leaving its state as it was, so the
caller fetches the next chunk and asks again. Every record carries the number of the line it starts
on, and a batch can end only where a record ends on a line boundary (`Lines.position`), which is
what the import's checkpoint records and where a resumed import starts reading.

Shapes read:
- CSV with a header row (RFC 4180 quoting, quoted fields may span lines; a UTF-8 BOM is skipped);
- NDJSON, one JSON object per line;
- a JSON document holding one array of objects (the AWS CLI's `list-suppressed-destinations`
  output, a provider API's list), streamed object by object.
Provider layouts and their mapping to our reasons are in docs/imports.md.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from typing import Any, Literal

import msgspec

from suppress.imports.provider_exports import PROVIDER_FIELDS, SES_POSITIONAL, infer_list, provider_record
from suppress.imports.records import (
    MAX_RAW,
    OWN_FIELDS,
    PROVIDER_FORMATS,
    FormatError,
    ImportOptions,
    Parsed,
    Record,
    RowError,
    own_record,
)
from suppress.spreadsheets import plain_cell

MAX_OBJECT = 64 * 1024
MAX_HEADER_LINE = 64 * 1024
# Deepest nesting of a first JSON line checked at upload (records themselves are flat objects).
MAX_DEPTH = 32


class NeedMore(Exception):
    """The next record needs bytes that were not fed yet."""


# -- lines -------------------------------------------------------------------------------------


class Lines:
    """The complete lines of an upload from a starting point, fed chunk by chunk.

    `take()` hands out the next line (with its newline) and counts it as consumed; `mark()` and
    `rewind()` let a reader give lines back when a record turns out to need more input.
    """

    def __init__(self, offset: int = 0, line: int = 0) -> None:
        self._texts: list[str] = []
        self._ends: list[int] = []
        self._next = 0
        self._partial = b""
        self._fed = offset
        self._base_line = line  # lines consumed before _texts[0]
        self._base_offset = offset
        self.eof = False

    def feed(self, chunk: bytes, *, final: bool = False) -> None:
        """Add the next bytes of the upload; `final` when no more follow."""
        if self._next:
            self._base_line += self._next
            self._base_offset = self._ends[self._next - 1]
            del self._texts[: self._next], self._ends[: self._next]
            self._next = 0
        data = self._partial + chunk if self._partial else chunk
        parts = data.split(b"\n")
        self._partial = parts.pop()
        end = self._fed + len(chunk) - len(data)  # the offset where `data` starts
        texts, ends = self._texts, self._ends
        for part in parts:
            end += len(part) + 1
            texts.append(part.decode() + "\n")
            ends.append(end)
        self._fed += len(chunk)
        if final:
            self.eof = True
            if self._partial:
                texts.append(self._partial.decode())
                ends.append(self._fed)
                self._partial = b""
        elif len(self._partial) > MAX_OBJECT * 16:
            raise FormatError(f"a line is longer than {MAX_OBJECT * 16} bytes")

    def take(self) -> str:
        """The next line; NeedMore when it was not fed yet; EOFError after the last one."""
        if self._next < len(self._texts):
            text = self._texts[self._next]
            self._next += 1
            return text
        if self.eof:
            raise EOFError
        raise NeedMore

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> str:
        try:
            return self.take()
        except EOFError:
            raise StopIteration from None

    def mark(self) -> int:
        return self._next

    def rewind(self, mark: int) -> None:
        self._next = mark

    def line_after(self, mark: int) -> int:
        """The number of the line `take()` returns next after `mark` (1-based)."""
        return self._base_line + mark + 1

    @property
    def consumed_line(self) -> int:
        """How many lines were taken."""
        return self._base_line + self._next

    def position(self) -> tuple[int, int]:
        """(bytes, lines) consumed so far: where a resumed read starts."""
        if self._next == 0:
            return self._base_offset, self._base_line
        return self._ends[self._next - 1], self._base_line + self._next

    def text_since(self, mark: int) -> str:
        return "".join(self._texts[mark : self._next])


# -- readers ------------------------------------------------------------------------------------


def _column_key(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip().lower().replace(" ", "_").replace("-", "_")


class Layout(msgspec.Struct, kw_only=True):
    """How the rows of one upload are read, settled by its first lines."""

    shape: Literal["csv", "ndjson", "document"]
    columns: list[str | None] = msgspec.field(default_factory=list)  # CSV: field of each column
    provider_list: str = ""


class Reader:
    """Records of one upload, read from `Lines` (see the module docstring)."""

    def __init__(self, options: ImportOptions) -> None:
        self.options = options
        fmt = options.format
        self._aliases = OWN_FIELDS[options.kind] if fmt not in PROVIDER_FORMATS else PROVIDER_FIELDS[fmt]
        self._strict_keys = fmt not in PROVIDER_FORMATS
        self.layout: Layout | None = None
        self._in_document = False
        self._to_record: Callable[[dict[str, Any]], Record] = self._own
        self._csv: Iterator[list[str]] | None = None

    # -- the start of the upload

    def read_layout(self, lines: Lines) -> Layout:
        """Settle the layout from the first lines (consuming a CSV header or a document's opening);
        FormatError when they do not fit the format."""
        mark = lines.mark()
        try:
            layout = self._read_layout(lines)
        except NeedMore:
            lines.rewind(mark)
            raise
        self.layout = layout
        plist = layout.provider_list
        fmt = self.options.format
        if fmt in PROVIDER_FORMATS:
            self._to_record = lambda fields: provider_record(fmt, plist, fields, self.options)
        self._in_document = layout.shape == "document"
        return layout

    def _read_layout(self, lines: Lines) -> Layout:
        fmt = self.options.format
        first = self._first_line(lines)
        if first is None:
            raise FormatError("the upload holds no data")
        stripped = first.lstrip("\ufeff").strip()
        if fmt == "csv" or (fmt in PROVIDER_FORMATS and not stripped.startswith(("{", "["))):
            return self._csv_layout(lines)
        if fmt in ("sendgrid", "mailgun") and self.options.list is None:
            raise FormatError(f"a {fmt} JSON upload needs list=... (which suppression list it holds)")
        plist = self.options.list or ""
        if _max_depth(stripped) > MAX_DEPTH:
            raise FormatError(f"line 1: JSON nested deeper than {MAX_DEPTH} levels")
        if fmt == "ndjson":
            # the first record must read as one, so a file that is not NDJSON is refused at upload
            try:
                first_value = msgspec.json.decode(stripped)
            except msgspec.DecodeError as exc:
                raise FormatError(
                    f"line 1: not valid JSON ({exc}); NDJSON is one JSON object per line"
                ) from None
            if not isinstance(first_value, dict):
                raise FormatError("line 1: not a JSON object; NDJSON is one JSON object per line")
            return Layout(shape="ndjson")
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return self._document_layout(lines, plist)  # an object or array opening on this line
        if isinstance(value, dict) and not any(
            isinstance(v, list) and v and isinstance(v[0], dict) for v in value.values()
        ):
            return Layout(shape="ndjson", provider_list=plist)
        raise FormatError(
            "a JSON document on one line: print it with one record per line (as the AWS CLI "
            "does, or `jq .`), or upload NDJSON (`jq -c '.[]'`)"
        )

    def _first_line(self, lines: Lines) -> str | None:
        """The first non-blank line, left unconsumed."""
        mark = lines.mark()
        try:
            while True:
                text = lines.take()
                if text.strip().lstrip("\ufeff"):
                    return text
        except EOFError:
            return None
        finally:
            lines.rewind(mark)

    def _csv_layout(self, lines: Lines) -> Layout:
        fmt, options = self.options.format, self.options
        mark = lines.mark()
        header = next(csv.reader(lines), None)
        if header is None:
            raise FormatError("the upload holds no data")
        if fmt == "ses" and header and "@" in header[0]:
            lines.rewind(mark)  # the bulk-import layout has no header: address,reason[,time]
            return Layout(shape="csv", columns=list(SES_POSITIONAL))
        keys = [_column_key(h) for h in header]
        columns = [self._aliases.get(k) for k in keys]
        unknown = [h for h, c in zip(header, columns, strict=True) if c is None and h.strip()]
        if unknown and self._strict_keys:
            accepted = ", ".join(dict.fromkeys(self._aliases))
            raise FormatError(f"unknown column(s) {', '.join(map(repr, unknown))}; accepted: {accepted}")
        named = [c for c in columns if c is not None]
        if len(named) != len(set(named)):
            raise FormatError("two columns name the same field")
        present = set(named)
        for need in self._required_columns():
            if need not in present:
                raise FormatError(f"the header has no {need!r} column")
        plist: str = options.list or ""
        if fmt in ("sendgrid", "mailgun") and not plist:
            plist = infer_list(fmt, present)
        return Layout(shape="csv", columns=columns, provider_list=plist)

    def _required_columns(self) -> tuple[str, ...]:
        fmt, kind = self.options.format, self.options.kind
        if fmt == "sendgrid":
            return ("email",)
        if fmt == "mailgun":
            return ("address",)
        if fmt == "ses":
            return ("email", "reason")
        if kind == "suppressions":
            return ("address",) if self.options.reason else ("address", "reason")
        if kind == "consents":
            return ("address", "granted_at")
        return ("customer_ref", "address", "event", "at")

    def _document_layout(self, lines: Lines, plist: str) -> Layout:
        """Consume a JSON document up to the `[` that opens its array of records."""
        consumed = 0
        while True:
            text = lines.take()
            consumed += len(text)
            if consumed > MAX_HEADER_LINE:
                raise FormatError("no array of records found at the start of the JSON document")
            at = text.find("[")
            if at >= 0:
                if text[at + 1 :].strip():
                    raise FormatError(
                        "put the records of the JSON document on lines of their own (as the AWS CLI "
                        "prints them), or upload NDJSON"
                    )
                return Layout(shape="document", provider_list=plist)

    # -- records

    def read(self, lines: Lines) -> Parsed | None:
        """The next record (or its error); None at the end; NeedMore when more input is needed."""
        assert self.layout is not None
        while True:
            mark = lines.mark()
            try:
                if self.layout.shape == "csv":
                    parsed = self._read_csv(lines, mark)
                elif self.layout.shape == "ndjson":
                    parsed = self._read_ndjson(lines, mark)
                else:
                    parsed = self._read_document(lines, mark)
            except NeedMore:
                lines.rewind(mark)
                self._csv = None  # it may hold half a record
                raise
            except EOFError:
                return None
            if parsed is not None:
                return parsed

    def _read_csv(self, lines: Lines, mark: int) -> Parsed | None:
        assert self.layout is not None
        line = lines.line_after(mark)
        if self._csv is None:
            self._csv = csv.reader(lines)
        try:
            row = next(self._csv)
        except StopIteration:
            raise EOFError from None
        except csv.Error as exc:
            self._csv = None
            return self._error(line, f"not valid CSV: {exc}", lines.text_since(mark))
        if not row or (len(row) == 1 and not row[0].strip()):
            return None  # blank line
        columns = self.layout.columns
        if len(row) != len(columns) and not (self.options.format == "ses" and 1 < len(row) <= len(columns)):
            return self._error(
                line, f"{len(row)} fields where the header has {len(columns)}", lines.text_since(mark)
            )
        if self.options.format == "csv":  # our own exports: the formula guard comes off again
            row = [plain_cell(v) for v in row]
        fields = {c: v for c, v in zip(columns, row, strict=False) if c is not None and v != ""}
        return self._record(line, fields, lines.text_since(mark))

    def _read_ndjson(self, lines: Lines, mark: int) -> Parsed | None:
        line = lines.line_after(mark)
        text = lines.take()
        stripped = text.strip()
        if not stripped:
            return None
        try:
            value = msgspec.json.decode(stripped)
        except msgspec.DecodeError as exc:
            return self._error(line, f"not valid JSON: {exc}", text)
        except RecursionError:
            return self._error(line, "JSON nested too deep", text)
        return self._object(line, value, text)

    def _read_document(self, lines: Lines, mark: int) -> Parsed | None:
        """One object of the document's array, read over as many lines as it spans."""
        if not self._in_document:
            lines.take()  # whatever follows the array (e.g. "NextToken") is not read
            return None
        line = lines.line_after(mark)
        text = lines.take().strip()
        if not text or text == ",":
            return None
        if text.startswith("]"):
            self._in_document = False
            return None
        buffer, depth = text, _depth(text, 0)
        while depth > 0:
            if len(buffer) > MAX_OBJECT:
                raise FormatError(f"line {line}: a JSON object longer than {MAX_OBJECT} bytes")
            try:
                more = lines.take().strip()
            except EOFError:
                raise FormatError(f"line {line}: the JSON document ends inside an object") from None
            buffer += more
            depth = _depth(more, depth)
        candidate = buffer.rstrip(",").strip()
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError as exc:
            return self._error(line, f"not valid JSON: {exc}", buffer)
        except RecursionError:
            return self._error(line, "JSON nested too deep", buffer)
        return self._object(line, value, candidate)

    def _object(self, line: int, value: Any, raw: str) -> Parsed:
        if not isinstance(value, dict):
            return self._error(line, "not a JSON object", raw)
        fields: dict[str, Any] = {}
        for key, item in value.items():
            name = self._aliases.get(_column_key(str(key)))
            if name is None:
                if self._strict_keys:
                    return self._error(line, f"unknown field {str(key)[:60]!r}", raw)
                continue
            if item is not None:
                fields[name] = item
        return self._record(line, fields, raw)

    def _record(self, line: int, fields: dict[str, Any], raw: str) -> Parsed:
        try:
            return Parsed(line, self._to_record(fields), None, raw)
        except RowError as exc:
            return self._error(line, str(exc), raw)

    def _own(self, fields: dict[str, Any]) -> Record:
        return own_record(self.options.kind, fields, self.options)

    @staticmethod
    def _error(line: int, message: str, raw: str) -> Parsed:
        return Parsed(line, None, message, raw.rstrip("\r\n")[:MAX_RAW])


def _nesting(text: str, depth: int = 0, *, stop_above: int | None = None) -> tuple[int, int]:
    """The nesting depth of braces and brackets after `text` (outside JSON strings), starting at
    `depth`, and the deepest it reached; stops early once deeper than `stop_above`."""
    deepest = depth
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        elif char in "}]":
            depth -= 1
    return depth, deepest


def _max_depth(text: str) -> int:
    """The deepest nesting in `text`, counted up to just past MAX_DEPTH."""
    return _nesting(text, stop_above=MAX_DEPTH)[1]


def _depth(text: str, depth: int) -> int:
    """The nesting depth after `text`, starting at `depth`."""
    return _nesting(text, depth)[0]
