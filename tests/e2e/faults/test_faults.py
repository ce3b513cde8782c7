"""End-to-end fault tests: one-click unsubscribes against a real `suppress serve` process and a real
`suppress worker` (arq) process, on a throwaway embedded PostgreSQL and Redis of this module's own
(never the machine's servers, whatever SUPPRESS_TEST_* say), while a) the worker is SIGKILLed,
b) Redis is flushed, c) PostgreSQL is stopped, or d) every link is POSTed twice at the same moment.

Each scenario makes a fresh tenant with the CLI, a topic and a consent for each of N recipients,
gets every recipient's unsubscribe link from POST /v1/checks, and registers a webhook that points
at a small HTTP receiver on 127.0.0.1 (a thread here) that checks every request's signature and
records its `Suppress-Event-Id`. Then N one-click POSTs go out at a steady pace from concurrent
keep-alive clients while the fault strikes, and once everything has settled (polled with a
deadline, never a blind sleep) every scenario proves:

- every unsubscribe that got a 2xx is in the database: an `unsubscribed` suppression row and exactly
  one `unsubscribed` ledger event for the recipient (and no recipient has two);
- a POST /v1/checks denies every acknowledged recipient (reason `unsubscribed`);
- every such event has exactly one webhook delivery row, delivered, and the receiver got its id;
- no `pending_effects` row and no pending delivery is left;
- duplicate receipts (the same event id twice): 0, unless a delivery attempt was cut off after its
  POST left but before its outcome was written (a SIGKILLed worker, PostgreSQL going away between
  the claim and the record). Delivery is at least once (docs/webhooks.md): the service cannot know
  whether a cut-off attempt reached the receiver, so it sends again once the attempt's 60 s lease
  runs out. Such attempts keep a row with no outcome (`duration_ms IS NULL`) in `webhook_attempts`;
  the test asserts duplicates <= those rows.

The counts are printed (`uv run pytest tests/e2e/faults -s` shows them); the module takes
about 2-3 minutes.

About time: recovery is bounded by the worker's crons (sweeper every 30 s with a 15 s grace, webhook
redelivery every 30 s with a 15 s grace) and by the delivery lease (60 s: a cut-off attempt is sent
again only after it). The tests only poll, with deadlines. Two shortcuts, both stated here:

- While settling, the test runs the sweeper's and the redelivery cron's job functions itself every
  5 s (the worker's own crons run too), so no scenario waits up to 30 s for the next cron tick.
  `SUPPRESS_FAULTS_REAL_CRONS=1` turns that off and leaves recovery to the worker alone (slower,
  same results).
- SIGKILL: arq marks a running job with an `arq:in-progress:<job>` key that lives for the longest
  job timeout + 10 s (610 s with today's workers.settings, where some jobs have timeout=600).
  While it lives, neither a new worker nor the sweeper can run that job again (the sweeper's
  enqueue is a no-op: the job id is still taken), so whatever the killed worker held waits that
  long. After the kill, with no worker alive, the test checks that the keys would expire by
  themselves and deletes them, which is what waiting out their TTL would do.

Known bugs: a scenario that meets one of the bugs described in KNOWN_BUG_STALE_RESULT,
KNOWN_BUG_INTERNAL_CLIENT_ERROR and KNOWN_BUG_DOUBLE_CLICK still checks everything else, then ends as
xfail with the bug and the counts in the reason (`-rx` shows it); anything else that goes wrong
fails. Once they are fixed the scenarios simply pass.

`SUPPRESS_FAULTS_KEEP=1` keeps the data folder (servers' data and the server and worker logs).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from tests.e2e.faults.conftest import (
    FORM,
    IN_PROGRESS,
    KNOWN_BUG_DOUBLE_CLICK,
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
        state, seconds, blocked = await settle(stack, addresses, nudger)
    assert not blocked
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
    if doubled:
        pytest.xfail(f"{KNOWN_BUG_DOUBLE_CLICK} {line}")
    assert answers == Counter(applied=len(addresses), already=len(addresses))
    assert len(received) == len(addresses) and sum(received.values()) == len(addresses)
