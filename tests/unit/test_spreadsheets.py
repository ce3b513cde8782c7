"""The one CSV writer: no cell a spreadsheet could run as a formula, and the text comes back."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suppress.spreadsheets import FORMULA_TRIGGERS, CsvWriter, inert_cell, plain_cell, runs_as_formula

# OWASP's list (= + - @ tab CR), LF and NUL, their full-width and small forms, and blank-led variants.
DANGEROUS = [
    "=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "\n=1", "\x00=1", "\uff1d1", "\uff0b1", "\uff0d1",
    "\uff20x", "\ufe66x", "\ufe62x", "\ufe63x", "\ufe6bx", " =1+1", "   @x", "\u00a0=1", "\u3000=1",
    "\u200b=1", "\ufeff=1", "\x0b=1", "\x0c+1", " \t -1", "\x1b[31m",
]  # fmt: skip
SAFE = ["", "kari@example.no", "spring 2026", "1+1", "a=b", "'quoted", "  plain", "nb: 100 %"]

# Text that anything could hold: any code point, weighted towards the troublemakers.
texts = st.text(
    alphabet=st.one_of(
        st.sampled_from([*sorted(FORMULA_TRIGGERS), " ", "\xa0", "\u3000", "\ufeff", "'", '"', ",", ";"]),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=20,
)


@pytest.mark.parametrize("text", DANGEROUS)
def test_formula_cells_get_an_apostrophe(text: str) -> None:
    assert runs_as_formula(text) and inert_cell(text) == "'" + text


@pytest.mark.parametrize("text", SAFE)
def test_other_cells_are_left_alone(text: str) -> None:
    assert inert_cell(text) == text


def _visible_start(cell: str) -> str:
    stripped = cell.lstrip("".join(ch for ch in cell if ch.isspace() or not ch.isprintable()))
    return stripped[:1]


@given(st.lists(st.lists(texts | st.integers() | st.none(), min_size=1, max_size=5), max_size=5))
def test_every_cell_written_is_inert_and_reads_back(rows: list[list[str | int | None]]) -> None:
    text = CsvWriter().rows(rows)
    read = list(csv.reader(io.StringIO(text, newline="")))
    assert len(read) == len(rows)
    for written, cells in zip(read, rows, strict=True):
        assert len(written) == len(cells)
        for cell, original in zip(written, cells, strict=True):
            if isinstance(original, int):  # a number stays a number (-1 is no formula)
                assert cell == str(original)
                continue
            assert not runs_as_formula(cell)  # a spreadsheet shows it as text
            assert cell[:1] not in FORMULA_TRIGGERS and _visible_start(cell) not in FORMULA_TRIGGERS
            expected = "" if original is None else original
            assert plain_cell(cell) == expected  # the apostrophe is all that was added


@given(texts)
def test_the_guard_is_undone_exactly(text: str) -> None:
    assert plain_cell(inert_cell(text)) == text


@pytest.mark.parametrize("text", ["'=1", "''+2", "'@x"])
def test_a_text_that_starts_with_the_guard_comes_back_as_it_was(text: str) -> None:
    assert plain_cell(inert_cell(text)) == text


def test_text_is_quoted_numbers_are_not() -> None:
    assert CsvWriter().row(["a", 1, 2.5, None, "x,y", 'say "hi"']) == '"a",1,2.5,"","x,y","say ""hi"""\r\n'
