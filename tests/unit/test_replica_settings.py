"""The replica settings: parsed, checked, and never shown in a log line."""

from __future__ import annotations

import pytest

from suppress.config import ConfigurationError, Settings


def test_replica_urls_are_split_and_the_bound_defaults_to_a_second() -> None:
    settings = Settings.from_env(
        {"SUPPRESS_DATABASE_REPLICA_URLS": " postgresql://r1:5432/s , postgresql://u:pw@r2/s ,"}
    )
    assert settings.replica_urls == ("postgresql://r1:5432/s", "postgresql://u:pw@r2/s")
    assert settings.replica_max_lag_ms == 1000
    assert "pw" not in repr(settings) and "replicas=2" in repr(settings)
    assert Settings.from_env({}).replica_urls == ()


@pytest.mark.parametrize(
    "env",
    [
        {"SUPPRESS_DATABASE_REPLICA_URLS": "redis://r1/0"},
        {"SUPPRESS_REPLICA_MAX_LAG_MS": "0"},
        {"SUPPRESS_REPLICA_MAX_LAG_MS": "soon"},
    ],
)
def test_bad_replica_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env(env)
