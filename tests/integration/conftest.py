"""Fixtures of the integration tier shared by several modules: a pool of the service's own kind and
the address hasher keyed as the service keys it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from suppress.addresses import AddressHasher
from suppress.config import DerivedKeys, Settings
from suppress.db import create_pool


@pytest.fixture(scope="module")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A pool like a worker's (room for concurrent writers in one module)."""
    pool = await create_pool(settings.require_database_url(), size=12)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def hasher(settings: Settings) -> AddressHasher:
    return AddressHasher(DerivedKeys.from_settings(settings).address_hash_key)
