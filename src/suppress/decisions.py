"""A recipient's decision input, loaded and built one way for every reader.

The pre-send check, the recipient view (GET /v1/recipients/...), the unsubscribe and preference
pages and the SMS keywords all read a recipient's state with the one statement `recipient_states`
(sql/checks.sql: an array of hashes in, one row per known recipient out) and turn each row into a
`policy.RecipientState` with `state_of`; `policy.decide()` then applies the tenant's settings as
they are now (consent validity included). The list-health snapshot reads the same columns grouped
(`health_audience_groups`) and builds the state by field name, so a new input of the decision
must reach all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from suppress.policy import RecipientState, TenantPolicy
from suppress.sql import Queries

Reader = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy

# A NULL array column (`recipient_states` returns NULL for an empty array: cheaper to decode) stands
# for this list, which nothing ever mutates.
_EMPTY: list[Any] = []


class Row(Protocol):
    """A database row (asyncpg.Record) or anything indexed the same way."""

    def __getitem__(self, key: Any, /) -> Any: ...


def state_of(row: Row) -> RecipientState:
    """The decision input of one `recipient_states` row (column 0 is the hash)."""
    empty = _EMPTY
    return RecipientState(
        row[1] or empty,
        row[2] or empty,
        row[3] or empty,
        row[4] or empty,
        row[5] or empty,
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11] or empty,
        row[12],
    )


def tenant_policy(row: Row) -> TenantPolicy:
    """The decision settings of a tenant from a row holding its settings columns."""
    return TenantPolicy(
        relationship_window_days=row["relationship_window_days"],
        soft_opt_in_without_topic=row["soft_opt_in_without_topic"],
        transactional_blocked_by=frozenset(row["transactional_blocked_by"]),
        consent_validity_days=row["consent_validity_days"],
    )


async def load_states(
    reader: Reader, queries: Queries, tenant_id: int, channel: str, hashes: Iterable[bytes]
) -> dict[bytes, RecipientState]:
    """The states of these recipients (the ones known; a missing hash means nothing is known)."""
    rows = await reader.fetch(queries.recipient_states, tenant_id, channel, list(hashes))
    return {bytes(row[0]): state_of(row) for row in rows}


async def load_state(
    reader: Reader, queries: Queries, tenant_id: int, channel: str, address_hash: bytes
) -> RecipientState | None:
    """One recipient's state, None when nothing is known about it."""
    return (await load_states(reader, queries, tenant_id, channel, [address_hash])).get(address_hash)
