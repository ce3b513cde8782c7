"""The one CSV writer of the service: every CSV it produces (the suppressions export, an import's
error report, the dashboard's campaign table) is written here, so a spreadsheet opens it as data and
never runs a cell as a formula (CSV injection, OWASP).

Every text cell is quoted (RFC 4180, quotes doubled) and one a spreadsheet could read as a formula
gets a leading apostrophe, which spreadsheets show as text: a cell starting with `=`, `+`, `-`, `@`,
tab, CR, LF or NUL, their full-width and small forms (`＝＋－＠`, `﹦﹢﹣﹫`), any other control
character, or any of those after leading blanks (` =1+1`, NBSP, ideographic space, ...). Numbers are
written as numbers. `plain_cell` undoes the apostrophe, so an export imports back as it is.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable
from typing import Final

# Served as `text/csv; charset=utf-8`: the framework adds the charset to text/* media types.
CSV_MEDIA_TYPE: Final = "text/csv"
FORMULA_TRIGGERS: Final = frozenset("=+-@\t\r\n\x00\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\ufe6b")
GUARD: Final = "'"


def _blank(ch: str) -> bool:
    """A character a spreadsheet may skip before it looks for a formula: white space, and anything
    not printable (controls, format characters, unassigned and private-use code points)."""
    return ch.isspace() or not ch.isprintable()


def runs_as_formula(text: str) -> bool:
    """True when a spreadsheet could treat a cell holding `text` as a formula or a control."""
    if not text:
        return False
    if text[0] in FORMULA_TRIGGERS or unicodedata.category(text[0]) in ("Cc", "Cf"):
        return True
    for ch in text:
        if not _blank(ch):
            return ch in FORMULA_TRIGGERS
    return False


def _needs_guard(text: str) -> bool:
    # A text that already starts with the guard before a formula ("'=1") gets one more, so that
    # taking one off on import gives back exactly what was written.
    while True:
        if runs_as_formula(text):
            return True
        if not text.startswith(GUARD):
            return False
        text = text[1:]


def inert_cell(text: str) -> str:
    """Text as a cell a spreadsheet shows as text and never runs (a leading apostrophe)."""
    return GUARD + text if _needs_guard(text) else text


def plain_cell(cell: str) -> str:
    """The text `inert_cell` was given: its apostrophe taken off (other cells as they are)."""
    if cell.startswith(GUARD) and _needs_guard(cell[1:]):
        return cell[1:]
    return cell


Cell = str | int | float | None


class CsvWriter:
    """Turns rows into CSV text (CRLF line ends), one row or many at a time, for streaming."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n", quoting=csv.QUOTE_NONNUMERIC)

    def rows(self, rows: Iterable[Iterable[Cell]]) -> str:
        """The CSV text of `rows`: text cells quoted and made inert, numbers as they are, None empty."""
        for row in rows:
            self._writer.writerow(
                [
                    ""
                    if cell is None
                    else inert_cell(cell)
                    if isinstance(cell, str)
                    else cell
                    if isinstance(cell, int | float) and not isinstance(cell, bool)
                    else inert_cell(str(cell))
                    for cell in row
                ]
            )
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def row(self, cells: Iterable[Cell]) -> str:
        """The CSV text of one row."""
        return self.rows([cells])
