"""CSV that a spreadsheet opens as data: cells are never run as formulas (CSV injection)."""

from __future__ import annotations

# A spreadsheet runs a cell starting with one of these as a formula (fullwidth forms included).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def inert_cell(text: str) -> str:
    """Free text as a cell a spreadsheet shows as text and never runs (a leading quote)."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text
