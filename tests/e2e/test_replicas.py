"""Reads from a real streaming replica: the lag bound, read-your-writes, and a replica that dies.

The module starts its own primary and hot standby from the embedded PostgreSQL's binaries
(tests/replication.py) and runs the app in-process against them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress import metrics
from suppress.addresses import AddressHasher
from suppress.app import create_app
from suppress.check_counts import CheckCounts
from suppress.checks import STREAM_FROM, CheckRequest, CheckService
from suppress.config import DerivedKeys, Settings
from suppress.db import create_pool
from suppress.devstack.embedded import EmbeddedPostgres
from suppress.devstack.replication import EmbeddedStandby
from suppress.migrate import migrate
from suppress.replicas import Reads, ReplicaSet
from suppress.sql import load_queries
from suppress.tenants import Authenticator, create_api_key, create_tenant
from suppress.tokens import TokenKeyring
from tests.conftest import PUBLIC_URL, TEST_SECRET

MAX_LAG_MS = 1500


class Cluster:
    def __init__(self, primary: EmbeddedPostgres, standby: EmbeddedStandby) -> None:
        self.primary = primary
        self.standby = standby


@pytest.fixture(scope="module")
def cluster(embedded_root: Path) -> Iterator[Cluster]:
    folder = embedded_root / f"replication-{secrets.token_hex(3)}"
    primary = EmbeddedPostgres(folder / "primary")
    primary_dsn = primary.start()

    async def migrated() -> None:
        conn = await asyncpg.connect(primary_dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(migrated())
    standby = EmbeddedStandby(folder / "standby", primary.port)
    try:
        standby.start()
        yield Cluster(primary, standby)
    finally:
        standby.stop()
        primary.stop()


@pytest.fixture(scope="module")
async def app(cluster: Cluster, clean_redis: str) -> Litestar:
    return create_app(
        Settings(
            database_url=cluster.primary.dsn,
            redis_url=clean_redis,
            secret=TEST_SECRET,
            public_url=PUBLIC_URL,
            replica_urls=(cluster.standby.dsn,),
            replica_max_lag_ms=MAX_LAG_MS,
        )
    )


@pytest.fixture(scope="module")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


class Keys:
    def __init__(self, admin: str, reader: str) -> None:
        self.admin = {"Authorization": f"Bearer {admin}"}  # writes and checks
        self.reader = {"Authorization": f"Bearer {reader}"}  # another key of the tenant: checks only


@pytest.fixture
async def keys(cluster: Cluster) -> Keys:
    conn = await asyncpg.connect(cluster.primary.dsn)
    try:
        queries = load_queries()
        admin = await create_tenant(conn, queries, f"tenant-{secrets.token_hex(4)}")
        reader = await create_api_key(conn, queries, admin.tenant_id, ["check"])
    finally:
        await conn.close()
    return Keys(admin.api_key, reader.api_key)


def reads(target: str) -> float:
    return metrics.REGISTRY.get_sample_value("suppress_db_reads_total", {"target": target}) or 0.0


async def consent(client: AsyncTestClient[Litestar], keys: Keys, address: str) -> None:
    body = {"channel": "email", "address": address, "source": "signup_form"}
    response = await client.post("/v1/consents", json=body, headers=keys.admin)
    assert response.status_code == 201, response.text


async def check(client: AsyncTestClient[Litestar], headers: dict[str, str], address: str) -> dict[str, Any]:
    body = {"channel": "email", "purpose": "marketing", "recipients": [address]}
    response = await client.post("/v1/checks", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["results"][0]
    return result


async def replica_sees(cluster: Cluster, client: AsyncTestClient[Litestar], keys: Keys, address: str) -> None:
    """Wait until a check by the reader key is answered allowed from the replica."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        before = reads("replica")
        if (await check(client, keys.reader, address))["allowed"] and reads("replica") > before:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the replica never served the reader's check")


async def test_no_check_reads_state_older_than_the_bound_and_a_writer_reads_its_write(
    cluster: Cluster, client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    address = f"ola.{secrets.token_hex(4)}@example.no"
    await consent(client, keys, address)
    await replica_sees(cluster, client, keys, address)
    standby = await asyncpg.connect(cluster.standby.dsn)
    try:
        await standby.execute("SELECT pg_wal_replay_pause()")
        response = await client.post(
            "/v1/consents/withdraw", json={"channel": "email", "address": address}, headers=keys.admin
        )
        assert response.status_code == 200, response.text
        written = time.monotonic()
        # The writer's own key never sees the state from before its write.
        assert (await check(client, keys.admin, address))["reason"] == "unsubscribed"
        # Another key may read the replica's older state, but never older than the bound.
        stale_reads = 0
        while True:
            started = time.monotonic()
            before = reads("replica")
            result = await check(client, keys.reader, address)
            if result["allowed"]:
                assert reads("replica") > before
                assert started - written <= MAX_LAG_MS / 1000, "read state older than the bound"
                stale_reads += 1
            if started - written > MAX_LAG_MS / 1000 + 1.0:
                break
            await asyncio.sleep(0.05)
        assert stale_reads > 0, "the paused replica was never read: the test proves nothing"
        assert result["reason"] == "unsubscribed"
        assert (await check(client, keys.admin, address))["reason"] == "unsubscribed"
    finally:
        await standby.execute("SELECT pg_wal_replay_resume()")
        await standby.close()
    # Replay resumed: the replica serves the reader again, with the unsubscribe.
    deadline = time.monotonic() + 20
    while True:
        before = reads("replica")
        result = await check(client, keys.reader, address)
        if reads("replica") > before:
            break
        assert time.monotonic() < deadline, "the replica was not read again after replay resumed"
        await asyncio.sleep(0.1)
    assert result["reason"] == "unsubscribed"


async def test_unsubscribe_then_check_with_the_same_key_is_denied(
    cluster: Cluster, client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    for n in range(20):
        address = f"kari.{n}.{secrets.token_hex(4)}@example.no"
        await consent(client, keys, address)
        response = await client.post(
            "/v1/suppressions",
            json={"channel": "email", "address": address, "reason": "unsubscribed"},
            headers=keys.admin,
        )
        assert response.status_code in {200, 201}, response.text
        result = await check(client, keys.admin, address)
        assert not result["allowed"] and result["reason"] == "unsubscribed", n
        view = await client.get(f"/v1/recipients/email/{address}", headers=keys.admin)
        assert "unsubscribed" in view.json()["active_suppressions"]


async def test_a_recipients_one_click_unsubscribe_is_denied_at_once_to_every_key_of_the_tenant(
    cluster: Cluster, client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    address = f"siri.{secrets.token_hex(4)}@example.no"
    await consent(client, keys, address)
    await replica_sees(cluster, client, keys, address)
    body = {"channel": "email", "purpose": "marketing", "recipients": [address]}
    sent = await client.post("/v1/checks", json=body, headers=keys.reader)
    link = sent.json()["results"][0]["unsubscribe_url"].removeprefix(PUBLIC_URL)
    standby = await asyncpg.connect(cluster.standby.dsn)
    try:
        await standby.execute("SELECT pg_wal_replay_pause()")
        clicked = await client.post(link, data={"List-Unsubscribe": "One-Click"})
        assert clicked.status_code == 200, clicked.text
        # The replica still holds the consent, but no sender key reads it any more.
        assert (await check(client, keys.reader, address))["reason"] == "unsubscribed"
        assert (await check(client, keys.admin, address))["reason"] == "unsubscribed"
    finally:
        await standby.execute("SELECT pg_wal_replay_resume()")
        await standby.close()


async def test_checks_keep_answering_from_the_primary_when_the_replica_is_killed(
    cluster: Cluster, client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    allowed = f"per.{secrets.token_hex(4)}@example.no"
    await consent(client, keys, allowed)
    await replica_sees(cluster, client, keys, allowed)
    failures: list[str] = []
    answered = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal answered
        body = {"channel": "email", "purpose": "marketing", "recipients": [allowed, "nobody@example.no"] * 50}
        while not stop.is_set():
            response = await client.post("/v1/checks", json=body, headers=keys.reader)
            if response.status_code != 200 or not response.json()["results"][0]["allowed"]:
                failures.append(response.text[:200])
            answered += 1
            await asyncio.sleep(0)  # the test client answers in its own thread: let the others run

    tasks = [asyncio.create_task(load()) for _ in range(4)]
    try:
        await asyncio.sleep(0.5)
        from_replica = reads("replica")
        assert from_replica > 0
        await asyncio.to_thread(cluster.standby.kill)
        killed_at = answered
        await asyncio.sleep(1.5)
        primary_before = reads("primary")
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert not failures, failures[:3]
    assert answered > killed_at + 4, "checks stopped answering when the replica died"
    assert reads("primary") > primary_before  # answered from the primary now
    # Brought back (same address), the replica is found again by the monitor and read again.
    await asyncio.to_thread(cluster.standby.start)
    await replica_sees(cluster, client, keys, allowed)


async def test_a_large_check_moves_to_the_primary_when_its_replica_dies_before_it_reads(
    cluster: Cluster, app: Litestar, client: AsyncTestClient[Litestar], keys: Keys
) -> None:
    """A check of 5 000+ recipients reads through a cursor; its replica failing at the start sends
    the whole read to the primary. Its own ReplicaSet, probed by hand: no monitor gets there first."""
    allowed = f"stor.{secrets.token_hex(4)}@example.no"
    await consent(client, keys, allowed)
    await replica_sees(cluster, client, keys, allowed)
    settings: Settings = app.state.settings
    queries = load_queries()
    primary = await create_pool(cluster.primary.dsn, size=2)
    replicas = ReplicaSet(primary, [cluster.standby.dsn], max_lag=60.0, pool_size=2)
    try:
        await replicas.probe()
        assert replicas.choose(None) is not None
        principal = await Authenticator(primary, queries).authenticate(keys.reader["Authorization"])
        keyring = TokenKeyring({1: b"k" * 64}, 1)
        hasher = AddressHasher(DerivedKeys.from_settings(settings).address_hash_key)
        service = CheckService(
            primary,
            queries,
            hasher,
            keyring,
            PUBLIC_URL,
            CheckCounts(primary, queries),
            Reads(primary, replicas),
        )
        recipients = [allowed] + [f"nobody{n}@example.no" for n in range(STREAM_FROM)]
        await asyncio.to_thread(cluster.standby.kill)
        answer = await service.check(
            principal,
            CheckRequest(channel="email", purpose="marketing", recipients=recipients),
            datetime.now(UTC),
        )
        assert answer.results[0].allowed and answer.summary.allowed == 1
        assert not replicas.replicas[0].up  # given up by the check itself: nothing else probes this set
    finally:
        await replicas.close()
        await primary.close()
        await asyncio.to_thread(cluster.standby.start)
