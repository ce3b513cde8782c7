"""Which replica a read may use: fresh within the bound, past the caller's fence, taken in turn."""

from __future__ import annotations

import time
from typing import Any, cast

import asyncpg

from suppress.replicas import ReplicaSet

POOL = cast("asyncpg.Pool", object())  # choose() only looks at whether a replica has a pool


def replica_set(*states: tuple[float, int]) -> ReplicaSet:
    """Replicas with (age of their state in seconds, replayed position)."""
    replicas = ReplicaSet(
        cast("Any", None), [f"postgresql://r{n}/s" for n in range(len(states))], max_lag=1.0
    )
    now = time.monotonic()
    for replica, (age, position) in zip(replicas.replicas, states, strict=True):
        replica.pool = POOL
        replica.fresh_as_of = now - age
        replica.replay_lsn = position
    return replicas


def test_a_replica_older_than_the_bound_is_not_read() -> None:
    replicas = replica_set((1.5, 100), (0.2, 100))
    assert all(replicas.choose(None) is replicas.replicas[1] for _ in range(3))
    assert replica_set((1.5, 100)).choose(None) is None


def test_a_replica_behind_the_callers_last_write_is_routed_around() -> None:
    replicas = replica_set((0.1, 90), (0.1, 120))
    assert all(replicas.choose(100) is replicas.replicas[1] for _ in range(3))
    assert replicas.choose(200) is None


def test_fresh_replicas_take_reads_in_turn_and_a_down_one_none() -> None:
    replicas = replica_set((0.1, 1), (0.1, 1))
    assert {id(replicas.choose(None)) for _ in range(4)} == {id(r) for r in replicas.replicas}
    replicas.replicas[0].pool = None
    assert all(replicas.choose(None) is replicas.replicas[1] for _ in range(3))
