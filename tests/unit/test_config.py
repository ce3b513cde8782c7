"""Settings read from the environment: the check counts' flush interval."""

from __future__ import annotations

import pytest

from suppress.config import ConfigurationError, Settings


def test_check_counts_flush_interval_defaults_to_a_second_and_can_be_set() -> None:
    assert Settings.from_env({}).check_counts_flush_seconds == 1.0
    assert (
        Settings.from_env({"SUPPRESS_CHECK_COUNTS_FLUSH_SECONDS": "0.25"}).check_counts_flush_seconds == 0.25
    )


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "3601", "soon"])
def test_a_bad_check_counts_flush_interval_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="SUPPRESS_CHECK_COUNTS_FLUSH_SECONDS"):
        Settings.from_env({"SUPPRESS_CHECK_COUNTS_FLUSH_SECONDS": bad})
