"""The request path's deadlines come from the environment, with defaults, and refuse nonsense."""

from __future__ import annotations

import pytest

from suppress.config import ConfigurationError, Settings


def test_deadlines_have_defaults_and_can_be_set() -> None:
    default = Settings.from_env({})
    assert (default.db_acquire_timeout, default.db_statement_timeout, default.redis_timeout) == (
        2.0,
        5.0,
        2.0,
    )
    set_ = Settings.from_env(
        {
            "SUPPRESS_DB_ACQUIRE_TIMEOUT": "0.5",
            "SUPPRESS_DB_STATEMENT_TIMEOUT": "30",
            "SUPPRESS_REDIS_TIMEOUT": "1",
        }
    )
    assert (set_.db_acquire_timeout, set_.db_statement_timeout, set_.redis_timeout) == (0.5, 30.0, 1.0)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "7200"])
@pytest.mark.parametrize(
    "name", ["SUPPRESS_DB_ACQUIRE_TIMEOUT", "SUPPRESS_DB_STATEMENT_TIMEOUT", "SUPPRESS_REDIS_TIMEOUT"]
)
def test_a_deadline_that_is_not_a_sensible_number_of_seconds_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({name: value})
