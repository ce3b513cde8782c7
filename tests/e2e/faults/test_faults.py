"""End-to-end fault tests: one-click unsubscribes against real `suppress serve` and `suppress worker`
processes while a) the worker is SIGKILLed, b) Redis is flushed, c) PostgreSQL is stopped, or
d) every link is POSTed twice at the same moment. The harness, what every scenario proves, and the
regressions asserted by name are described in conftest.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from tests.e2e.faults.conftest import (
    DOUBLE_CLICK,
    FORM,
    IN_PROGRESS,
    ONE_CLICK,
    QUEUE,
    N,
    Nudger,
    Stack,
    Stream,
    classify,
    event_ref,
    in_progress_ttl_ms,
    settle,
    until,
    verify,
)


@pytest.mark.parametrize("receiver", [0.1], indirect=True)  # a slow receiver: deliveries in flight
async def test_worker_sigkilled_mid_flight(stack: Stack) -> None:
    """a) The worker is SIGKILLed a third of the way in and restarted a moment later."""
    stream = Stream(stack, rate=60)
    posting = asyncio.create_task(stream.run())
    await stream.wait_for(N // 3)
    async with stack.redis() as redis:

        async def delivering() -> bool:  # strike while deliveries of ours are running
            running = [k async for k in redis.scan_iter(match=f"{IN_PROGRESS}webhook:{stack.tenant_id}:*")]
            return len(running) >= 3

        await until(delivering, 20, "webhook deliveries in flight", stack)
        code = stack.worker.kill()
    async with stack.db() as conn:
        pending_at_kill = await conn.fetchval(
            "SELECT count(*) FROM pending_effects WHERE tenant_id = $1", stack.tenant_id
        )
    assert code == -signal.SIGKILL
    async with stack.redis() as redis:
        queued_at_kill = await redis.zcard(QUEUE)
        held = [k async for k in redis.scan_iter(match=IN_PROGRESS + "*")]
        ttls = [await redis.pttl(k) for k in held]
        # No worker is alive: these locks are orphans. They would expire by themselves (a TTL no
        # longer than the longest job timeout + 10 s); deleting them is that wait, skipped.
        assert all(0 < ttl <= in_progress_ttl_ms() for ttl in ttls), ttls
        if held:
            await redis.delete(*held)
    assert any(k.startswith(f"{IN_PROGRESS}webhook:".encode()) for k in held), held
    await asyncio.sleep(0.5)  # "a moment later", while the POSTs go on
    stack.worker.start()
    await posting
    await verify(
        stack,
        stream,
        "a: worker SIGKILL",
        held_by_killed_worker=dict(Counter(k.decode().removeprefix(IN_PROGRESS).split(":")[0] for k in held)),
        lock_ttl_s=f"{max(ttls, default=0) / 1000:.0f}",
        queued_at_kill=queued_at_kill,
        pending_effects_at_kill=pending_at_kill,
    )


@pytest.mark.parametrize("receiver", [0.2], indirect=True)  # slow enough for a backlog of jobs
async def test_redis_flushed_mid_flight(stack: Stack) -> None:
    """b) FLUSHALL a third of the way in: every queued job vanishes; the crons find the work again."""
    stream = Stream(stack, rate=80)
    posting = asyncio.create_task(stream.run())
    await stream.wait_for(N // 3)
    async with stack.redis() as redis:
        queued = await redis.zcard(QUEUE)
        await redis.flushall()
    assert queued > 0, "nothing was queued when Redis was flushed"
    await posting
    outcome = await verify(stack, stream, "b: Redis FLUSHALL", jobs_flushed=queued)
    assert outcome.duplicates == 0 and outcome.cut_off_attempts == 0


async def test_postgres_stopped_while_unsubscribes_arrive(stack: Stack) -> None:
    """c) PostgreSQL stops a third of the way in and comes back (same data folder and port) while
    the POSTs go on: answers are 200 (applied, or spooled to Redis) or 503, never an error."""
    stores = stack.stores
    stream = Stream(stack, rate=40)
    posting = asyncio.create_task(stream.run())
    await stream.wait_for(N // 3)
    stopped_at = time.monotonic()
    await asyncio.to_thread(stores.pg.stop)
    stop_seconds = time.monotonic() - stopped_at
    answered = len(stream.sent)
    await stream.wait_for(answered + 60)  # a good number of POSTs meet the database down
    restarted_at = time.monotonic()
    dsn = await asyncio.to_thread(stores.pg.start)
    assert dsn == stores.database_url  # same port: the running server and worker reconnect
    start_seconds = time.monotonic() - restarted_at
    down_seconds = time.monotonic() - stopped_at
    await posting
    outcome = await verify(
        stack,
        stream,
        "c: PostgreSQL stopped",
        pg_down_s=f"{down_seconds:.1f}",
        pg_stop_s=f"{stop_seconds:.1f}",
        pg_start_s=f"{start_seconds:.1f}",
    )
    assert outcome.spooled > 0, "no POST met the database down"
    assert outcome.applied > 0


async def test_double_click_writes_once(stack: Stack) -> None:
    """d) Every link POSTed twice at the same moment (a mail client's one-click and the person's
    click, or a client retrying): both answers 2xx, one ledger event and one webhook event each."""
    answers: Counter[str] = Counter()
    gate = asyncio.Semaphore(4)  # four recipients' pairs in flight

    async def click(path: str) -> None:
        response = await stack.http.post(path, content=ONE_CLICK, headers=FORM)
        answers[classify(response)] += 1

    async def pair(path: str) -> None:
        async with gate:
            await asyncio.gather(click(path), click(path))

    await asyncio.gather(*(pair(path) for path in stack.links.values()))
    assert set(answers) <= {"applied", "already"}, answers
    addresses = set(stack.links)
    async with Nudger(stack) as nudger:
        state, seconds = await settle(stack, addresses, nudger)
    assert set(state.events) == addresses and addresses <= state.suppressed
    doubled = sum(1 for rows in state.events.values() if len(rows) > 1)
    received = Counter(stack.receiver.snapshot())
    event_ids = {e["id"] for rows in state.events.values() for e in rows}
    assert set(received) == {event_ref(stack, e) for e in event_ids}
    assert all(n == 1 for n in state.deliveries.values())
    line = (
        f"[d: double click] pairs={len(addresses)} answers={dict(answers)} "
        f"recipients_with_two_events={doubled} webhook_events={len(received)} settled_in={seconds:.1f}s"
    )
    print(line)
    assert not doubled, f"{DOUBLE_CLICK} {line}"
    assert answers == Counter(applied=len(addresses), already=len(addresses))
    assert len(received) == len(addresses) and sum(received.values()) == len(addresses)
