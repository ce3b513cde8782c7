"""Outbound webhooks: the API, the fan-out effect, signed delivery with retries, and the signature.

Deliveries go to a small HTTP server on 127.0.0.1 started by the test; jobs are called directly with
a ctx (the backoff is skipped by making the next attempt due in the database) and run by a real arq
worker in burst mode. Each test's direct enqueues go to a queue of its own that no worker reads.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from arq import ArqRedis, Retry, create_pool
from arq.worker import Worker
from hypothesis import assume, given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.settings import EFFECTS, WorkerSettings
from workers.webhooks import close_webhooks, deliver_webhook, fan_out, open_webhooks, redeliver_due_webhooks

from suppress.app import create_app
from suppress.config import ConfigurationError, Settings
from suppress.db import create_pool as create_db_pool
from suppress.effects import EffectBatch
from suppress.ledger import ledger_key
from suppress.queue import ENQUEUED_JOBS, JOB_DELIVER_WEBHOOK, JOB_DRAIN_EFFECTS, enqueue, redis_settings
from suppress.sealer import seal_tenant
from suppress.sql import Queries
from suppress.tenants import create_tenant
from suppress.webhooks import (
    DEFAULT_TOLERANCE,
    EVENT_KINDS,
    MAX_ATTEMPTS,
    MAX_RETRY_DELAY,
    SecretBox,
    delivery_job_id,
    retry_delay,
    sign,
    verify_signature,
)
from tests.conftest import TEST_SECRET, Tenant, post_json

Client = AsyncTestClient[Litestar]
HTTPS_URL = "https://hooks.example.test/suppress"


# -- a receiver: records every request and answers with scripted statuses ------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    connections: int = 0  # every TCP connection accepted, a request or not
    port: int = 0
    _server: asyncio.Server | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        method, path, _ = (await reader.readline()).decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Received(method, path, headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(f"HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.close()


# -- fixtures ------------------------------------------------------------------------------------------


def private_targets(settings: Settings) -> Settings:
    """SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS=1: the receiver listens on 127.0.0.1."""
    return msgspec.structs.replace(settings, webhook_allow_private_targets=True)


@pytest.fixture(scope="module")
async def http_client(settings: Settings) -> AsyncIterator[Client]:
    """The app with SUPPRESS_ALLOW_HTTP_WEBHOOKS=1 and SUPPRESS_WEBHOOK_ALLOW_PRIVATE_TARGETS=1, so
    webhooks can point at the local receiver."""
    app = create_app(private_targets(msgspec.structs.replace(settings, allow_http_webhooks=True)))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
async def _disable_webhooks_afterwards(db: asyncpg.Connection) -> AsyncIterator[None]:
    """Leave no active webhook behind: later workers in the session must find nothing to send."""
    yield
    await db.execute(
        """WITH w AS (UPDATE webhooks SET disabled_at = now() WHERE disabled_at IS NULL
                     RETURNING tenant_id, id)
           UPDATE webhook_deliveries d SET status = 'cancelled', next_attempt_at = NULL, finished_at = now()
           FROM w WHERE d.tenant_id = w.tenant_id AND d.webhook_id = w.id AND d.status = 'pending'"""
    )


@pytest.fixture
async def ctx(settings: Settings, queries: Queries) -> AsyncIterator[dict[str, Any]]:
    """A worker's ctx; its arq pool enqueues into a queue of its own that no worker reads."""
    pool = await create_db_pool(settings.require_database_url(), size=2)
    redis = await create_pool(
        redis_settings(settings.require_redis_url()),
        default_queue_name=f"test-webhooks-{secrets.token_hex(4)}",
    )
    context: dict[str, Any] = {
        "pool": pool,
        "queries": queries,
        "settings": private_targets(settings),
        "redis": redis,
    }
    open_webhooks(context)
    yield context
    await close_webhooks(context)
    await _drop_queue(redis)
    await redis.aclose()
    await pool.close()


async def _drop_queue(redis: ArqRedis) -> None:
    for job_id in await _queued(redis):
        await redis.delete(f"arq:job:{job_id}")
    await redis.delete(redis.default_queue_name)


async def _queued(redis: ArqRedis) -> list[str]:
    return [raw.decode() for raw in await redis.zrange(redis.default_queue_name, 0, -1)]


async def register(
    client: Client, tenant: Tenant, url: str, events: list[str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url} if events is None else {"url": url, "events": events}
    response = await client.post("/v1/webhooks", json=body, headers=tenant.auth("admin"))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def write_suppression(client: Client, tenant: Tenant, address: str, **extra: Any) -> int:
    body = {"channel": "email", "address": address, "reason": "manual", **extra}
    return int((await post_json(client, tenant, "/v1/suppressions", body, scope="write"))["event_id"])


async def write_consent(client: Client, tenant: Tenant, address: str) -> int:
    body = {"channel": "email", "address": address, "source": "signup_form"}
    return int((await post_json(client, tenant, "/v1/consents", body, scope="write"))["event_id"])


async def run_fan_out(ctx: dict[str, Any], tenant: Tenant, event_id: int) -> None:
    batch = EffectBatch(tenant_id=tenant.id, event_ids=[event_id], claimed_at=datetime.now(UTC))
    async with ctx["pool"].acquire() as conn, conn.transaction():
        after_commit = await fan_out(ctx, conn, batch)
    if after_commit is not None:
        await after_commit()


async def deliveries_of(db: asyncpg.Connection, tenant: Tenant) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, webhook_id, event_id, status, attempts FROM webhook_deliveries"
        " WHERE tenant_id = $1 ORDER BY id",
        tenant.id,
    )


async def make_due(db: asyncpg.Connection, tenant: Tenant, delivery_id: int) -> None:
    """Let the backoff pass at once."""
    await db.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant.id,
        delivery_id,
    )


async def deliver_until_done(
    ctx: dict[str, Any], db: asyncpg.Connection, tenant: Tenant, delivery_id: int
) -> tuple[str, list[float]]:
    """Run the delivery job until it stops retrying; returns its status and the retry delays."""
    delays: list[float] = []
    for _ in range(MAX_ATTEMPTS + 2):
        try:
            return await deliver_webhook(ctx, tenant.id, delivery_id), delays
        except Retry as retry:
            delays.append((retry.defer_score or 0) / 1000)
            await make_due(db, tenant, delivery_id)
    raise AssertionError("the delivery never finished")


# -- registration, listing, disabling ---------------------------------------------------------------


async def test_register_list_and_disable(client: Client, tenant: Tenant, db: asyncpg.Connection) -> None:
    made = await register(client, tenant, HTTPS_URL, ["consent_given", "suppression_added", "consent_given"])
    assert set(made) == {"id", "url", "events", "secret", "created_at"}
    assert made["url"] == HTTPS_URL and made["events"] == ["suppression_added", "consent_given"]
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(secret) >= 40
    # stored sealed: not in plaintext, opens only with the derived key and for its own tenant
    row = await db.fetchrow("SELECT secret_box FROM webhooks WHERE id = $1", made["id"])
    assert row is not None and secret.encode() not in row["secret_box"]
    box = SecretBox.from_secret(TEST_SECRET)
    assert box.open(tenant.id, row["secret_box"]) == secret
    with pytest.raises(ValueError, match="cannot be opened"):
        box.open(tenant.id + 1, row["secret_box"])
    with pytest.raises(ValueError, match="cannot be opened"):
        SecretBox.from_secret("another-secret-" + "y" * 40).open(tenant.id, row["secret_box"])

    everything = await register(client, tenant, HTTPS_URL + "/all")
    assert everything["events"] is None and everything["secret"] != secret

    listed = await client.get("/v1/webhooks", headers=tenant.auth("read"))
    assert listed.status_code == 200 and secret not in listed.text and everything["secret"] not in listed.text
    assert [(w["id"], w["events"], w["disabled_at"]) for w in listed.json()] == [
        (everything["id"], None, None),
        (made["id"], ["suppression_added", "consent_given"], None),
    ]
    assert all("secret" not in w for w in listed.json())

    disabled = await client.delete(f"/v1/webhooks/{made['id']}", headers=tenant.auth("admin"))
    assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None
    again = await client.delete(f"/v1/webhooks/{made['id']}", headers=tenant.auth("admin"))
    assert again.status_code == 200 and again.json()["disabled_at"] == disabled.json()["disabled_at"]
    listed = await client.get("/v1/webhooks", headers=tenant.auth("read"))
    assert {w["id"]: w["disabled_at"] is not None for w in listed.json()} == {
        made["id"]: True,
        everything["id"]: False,
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"url": "http://hooks.example.test/x"}, 422),  # http needs SUPPRESS_ALLOW_HTTP_WEBHOOKS=1
        ({"url": "ftp://hooks.example.test/x"}, 422),
        ({"url": "/relative/path"}, 422),
        ({"url": "hooks.example.test/x"}, 422),
        ({"url": "https://user:pw@hooks.example.test/x"}, 422),
        ({"url": "https://user@hooks.example.test/x"}, 422),
        ({"url": "https:///no-host"}, 422),
        ({"url": "https://hooks.example.test:99999/x"}, 422),
        ({"url": "https://hooks.example.test/x#part"}, 422),
        ({"url": "https://hooks example.test/x"}, 422),
        ({"url": "https://hooks.example.test/\x00"}, 422),
        ({"url": "https://hooks.example.test/" + "a" * 2000}, 422),
        ({"url": ""}, 422),
        ({"url": 5}, 422),
        ({}, 422),
        ({"url": HTTPS_URL, "events": ["no_such_kind"]}, 422),
        ({"url": HTTPS_URL, "events": []}, 422),
        ({"url": HTTPS_URL, "events": "consent_given"}, 422),
        ({"url": HTTPS_URL, "secret": "mine"}, 422),
    ],
)
async def test_bad_registrations_are_refused_and_change_nothing(
    client: Client, tenant: Tenant, db: asyncpg.Connection, body: dict[str, Any], status: int
) -> None:
    response = await client.post("/v1/webhooks", json=body, headers=tenant.auth("admin"))
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await db.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1", tenant.id) == 0


async def test_malformed_json_is_a_400(client: Client, tenant: Tenant, db: asyncpg.Connection) -> None:
    response = await client.post(
        "/v1/webhooks",
        content=b'{"url": ',
        headers={**tenant.auth("admin"), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1", tenant.id) == 0


async def test_scopes(client: Client, tenant: Tenant, db: asyncpg.Connection) -> None:
    for scope in ("check", "write", "read"):
        response = await client.post("/v1/webhooks", json={"url": HTTPS_URL}, headers=tenant.auth(scope))
        assert response.status_code == 403, scope
    assert (await client.post("/v1/webhooks", json={"url": HTTPS_URL})).status_code == 401
    assert await db.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1", tenant.id) == 0
    made = await register(client, tenant, HTTPS_URL)
    deliveries = f"/v1/webhooks/{made['id']}/deliveries"
    assert (await client.get("/v1/webhooks", headers=tenant.auth("check"))).status_code == 403
    assert (await client.get(deliveries, headers=tenant.auth("check"))).status_code == 403
    assert (await client.get("/v1/webhooks", headers=tenant.auth("read"))).status_code == 200
    assert (await client.get(deliveries, headers=tenant.auth("read"))).status_code == 200
    for scope in ("read", "write"):
        response = await client.delete(f"/v1/webhooks/{made['id']}", headers=tenant.auth(scope))
        assert response.status_code == 403, scope
    assert await db.fetchval("SELECT disabled_at FROM webhooks WHERE id = $1", made["id"]) is None


async def test_other_tenants_webhooks_are_not_found(
    client: Client, tenant: Tenant, db: asyncpg.Connection, queries: Queries
) -> None:
    made = await register(client, tenant, HTTPS_URL)
    other = await create_tenant(db, queries, f"other-{secrets.token_hex(4)}")
    other_auth = {"Authorization": f"Bearer {other.api_key}"}
    assert (await client.get("/v1/webhooks", headers=other_auth)).json() == []
    for path in (f"/v1/webhooks/{made['id']}/deliveries",):
        response = await client.get(path, headers=other_auth)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = await client.delete(f"/v1/webhooks/{made['id']}", headers=other_auth)
    assert response.status_code == 404
    assert await db.fetchval("SELECT disabled_at FROM webhooks WHERE id = $1", made["id"]) is None
    for missing in (987_654_321, 2**70):
        assert (await client.delete(f"/v1/webhooks/{missing}", headers=tenant.auth())).status_code == 404
        response = await client.get(f"/v1/webhooks/{missing}/deliveries", headers=tenant.auth())
        assert response.status_code == 404


async def test_delivery_listing_rejects_bad_parameters(client: Client, tenant: Tenant) -> None:
    made = await register(client, tenant, HTTPS_URL)
    path = f"/v1/webhooks/{made['id']}/deliveries"
    for query, status in (
        ("status=lost", 400),
        ("limit=0", 400),
        ("limit=1001", 400),
        ("cursor=bm9wZQ", 422),
    ):
        response = await client.get(f"{path}?{query}", headers=tenant.auth("read"))
        assert response.status_code == status, query
    response = await client.get(path, headers=tenant.auth("read"))
    assert response.json() == {"items": [], "next_cursor": None}


async def test_http_urls_need_the_setting(client: Client, http_client: Client, tenant: Tenant) -> None:
    response = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=tenant.auth())
    assert response.status_code == 422 and "SUPPRESS_ALLOW_HTTP_WEBHOOKS" in response.json()["detail"]
    assert (await register(http_client, tenant, "http://127.0.0.1:9/x"))["url"] == "http://127.0.0.1:9/x"


def test_the_setting_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).allow_http_webhooks is False
    assert Settings.from_env({"SUPPRESS_ALLOW_HTTP_WEBHOOKS": "1"}).allow_http_webhooks is True
    assert Settings.from_env({"SUPPRESS_ALLOW_HTTP_WEBHOOKS": "0"}).allow_http_webhooks is False
    with pytest.raises(ConfigurationError):
        Settings.from_env({"SUPPRESS_ALLOW_HTTP_WEBHOOKS": "perhaps"})


# -- fan-out and delivery -------------------------------------------------------------------------------


async def test_an_event_is_delivered_signed_once(
    client: Client,
    http_client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    ctx: dict[str, Any],
    receiver: Receiver,
) -> None:
    made = await register(http_client, tenant, receiver.url())
    event_id = await write_suppression(client, tenant, " Kari@Example.NO ", campaign="spring")
    await run_fan_out(ctx, tenant, event_id)
    [delivery] = await deliveries_of(db, tenant)
    assert (delivery["webhook_id"], delivery["event_id"], delivery["status"]) == (
        made["id"],
        event_id,
        "pending",
    )
    assert await _queued(ctx["redis"]) == [delivery_job_id(tenant.id, delivery["id"])]

    # fan-out again (the sweeper re-running the effect): no second delivery, no second job
    await run_fan_out(ctx, tenant, event_id)
    assert len(await deliveries_of(db, tenant)) == 1 and len(await _queued(ctx["redis"])) == 1

    assert await deliver_webhook(ctx, tenant.id, delivery["id"]) == "delivered"
    [request] = receiver.requests
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "suppress-webhooks"
    assert request.headers["suppress-event-id"] == f"{tenant.id}:{event_id}"
    signature = request.headers["suppress-signature"]
    assert verify_signature(made["secret"], signature, request.body, time.time())
    assert not verify_signature(made["secret"], signature, request.body + b" ", time.time())
    assert not verify_signature(made["secret"], signature, request.body, time.time() + DEFAULT_TOLERANCE + 5)

    payload = request.json()
    stored = await db.fetchrow("SELECT occurred_at, recorded_at, data FROM events WHERE id = $1", event_id)
    assert stored is not None
    assert payload == {
        "id": f"{tenant.id}:{event_id}",
        "type": "suppression_added",
        "occurred_at": payload["occurred_at"],
        "recorded_at": payload["recorded_at"],
        "tenant": tenant.id,
        "channel": "email",
        "address": "kari@example.no",
        "topic": None,
        "campaign": "spring",
        "source": "api",
        "data": json.loads(stored["data"]) if isinstance(stored["data"], str) else stored["data"],
    }
    assert datetime.fromisoformat(payload["occurred_at"]) == stored["occurred_at"]
    assert datetime.fromisoformat(payload["recorded_at"]) == stored["recorded_at"]

    # running the job again sends nothing more
    assert await deliver_webhook(ctx, tenant.id, delivery["id"]) == "delivered"
    assert len(receiver.requests) == 1

    listing = await client.get(f"/v1/webhooks/{made['id']}/deliveries", headers=tenant.auth("read"))
    [item] = listing.json()["items"]
    assert item["status"] == "delivered" and item["event_id"] == f"{tenant.id}:{event_id}"
    assert item["type"] == "suppression_added" and item["finished_at"] is not None
    [attempt] = item["attempts"]
    assert attempt["attempt"] == 1 and attempt["status_code"] == 200 and attempt["error"] is None
    assert isinstance(attempt["duration_ms"], int) and attempt["duration_ms"] >= 0


async def test_a_sealed_checkpoint_is_delivered_signed(
    client: Client,
    http_client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    ctx: dict[str, Any],
    receiver: Receiver,
    queries: Queries,
) -> None:
    made = await register(http_client, tenant, receiver.url(), ["ledger.checkpoint"])
    await write_consent(client, tenant, "sealed@example.no")
    [sealed] = await seal_tenant(db, queries, ledger_key(TEST_SECRET), tenant.id)
    [delivery_id] = sealed.deliveries
    assert await deliver_webhook(ctx, tenant.id, delivery_id) == "delivered"
    [request] = receiver.requests
    assert verify_signature(made["secret"], request.headers["suppress-signature"], request.body, time.time())
    ref = f"{tenant.id}:checkpoint:1"
    assert request.headers["suppress-event-id"] == ref
    payload = request.json()
    assert payload["id"] == ref and payload["type"] == "ledger.checkpoint" and payload["tenant"] == tenant.id
    kept = (await client.get("/v1/ledger/checkpoints", headers=tenant.auth("read"))).json()["items"]
    assert payload["checkpoint"] == kept[0] and kept[0]["tree_size"] == 1
    listing = await client.get(f"/v1/webhooks/{made['id']}/deliveries", headers=tenant.auth("read"))
    [item] = listing.json()["items"]
    assert (item["type"], item["event_id"], item["status"]) == ("ledger.checkpoint", ref, "delivered")


async def test_two_runs_at_once_send_once(
    client: Client,
    http_client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    ctx: dict[str, Any],
    receiver: Receiver,
) -> None:
    await register(http_client, tenant, receiver.url())
    await run_fan_out(ctx, tenant, await write_consent(client, tenant, "twice@example.no"))
    [delivery] = await deliveries_of(db, tenant)
    outcomes = await asyncio.gather(
        deliver_webhook(ctx, tenant.id, delivery["id"]),
        deliver_webhook(ctx, tenant.id, delivery["id"]),
        return_exceptions=True,
    )
    # one sends; the other finds it held (Retry, to look again later) or already delivered
    assert sorted(type(o).__name__ if isinstance(o, BaseException) else o for o in outcomes) in (
        ["Retry", "delivered"],
        ["delivered", "delivered"],
    )
    assert len(receiver.requests) == 1
    assert (await deliveries_of(db, tenant))[0]["attempts"] == 1


async def test_a_failing_receiver_is_retried_with_backoff(
    client: Client,
    http_client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    ctx: dict[str, Any],
    receiver: Receiver,
) -> None:
    receiver.statuses = [500, 503]
    made = await register(http_client, tenant, receiver.url())
    await run_fan_out(ctx, tenant, await write_consent(client, tenant, "retry@example.no"))
    [delivery] = await deliveries_of(db, tenant)

    with pytest.raises(Retry) as first:
        await deliver_webhook(ctx, tenant.id, delivery["id"])
    assert first.value.defer_score is not None and 9_000 <= first.value.defer_score <= 10_000
    due = await db.fetchval("SELECT next_attempt_at FROM webhook_deliveries WHERE id = $1", delivery["id"])
    assert timedelta(seconds=8) < due - datetime.now(UTC) <= timedelta(seconds=10)
    # run again before it is due (a duplicate job): nothing is sent, the job comes back later
    with pytest.raises(Retry):
        await deliver_webhook(ctx, tenant.id, delivery["id"])
    assert len(receiver.requests) == 1

    await make_due(db, tenant, delivery["id"])
    status, delays = await deliver_until_done(ctx, db, tenant, delivery["id"])
    assert status == "delivered" and len(delays) == 1 and 18 <= delays[0] <= 20
    assert len(receiver.requests) == 3
    assert len({r.headers["suppress-signature"] for r in receiver.requests}) >= 1
    assert all(
        verify_signature(made["secret"], r.headers["suppress-signature"], r.body, time.time())
        for r in receiver.requests
    )
    assert len({r.body for r in receiver.requests}) == 1  # the same event, byte for byte

    listing = await client.get(
        f"/v1/webhooks/{made['id']}/deliveries?status=delivered", headers=tenant.auth("read")
    )
    [item] = listing.json()["items"]
    assert [(a["attempt"], a["status_code"]) for a in item["attempts"]] == [(1, 500), (2, 503), (3, 200)]
    times = [datetime.fromisoformat(a["attempted_at"]) for a in item["attempts"]]
    assert times == sorted(times)
    pending = await client.get(f"/v1/webhooks/{made['id']}/deliveries?status=pending", headers=tenant.auth())
    assert pending.json()["items"] == []


async def test_an_unreachable_receiver_fails_after_the_last_attempt(
    http_client: Client, client: Client, tenant: Tenant, db: asyncpg.Connection, ctx: dict[str, Any]
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    made = await register(http_client, tenant, f"http://127.0.0.1:{port}/hook")
    await run_fan_out(ctx, tenant, await write_suppression(client, tenant, "gone@example.no"))
    [delivery] = await deliveries_of(db, tenant)
    status, delays = await deliver_until_done(ctx, db, tenant, delivery["id"])
    assert status == "failed" and len(delays) == MAX_ATTEMPTS - 1
    for attempt, delay in enumerate(delays, start=1):  # exponential, capped, with up to 10 % jitter
        assert 0.9 * retry_delay(attempt, 0.0) - 0.01 <= delay <= retry_delay(attempt, 0.0) <= MAX_RETRY_DELAY
    assert await deliver_webhook(ctx, tenant.id, delivery["id"]) == "failed"  # no attempt after the last

    listing = await client.get(f"/v1/webhooks/{made['id']}/deliveries", headers=tenant.auth("read"))
    [item] = listing.json()["items"]
    assert item["status"] == "failed" and item["next_attempt_at"] is None and item["finished_at"] is not None
    assert [a["attempt"] for a in item["attempts"]] == list(range(1, MAX_ATTEMPTS + 1))
    assert all(
        a["status_code"] is None and a["error"] == "could not connect to the host" for a in item["attempts"]
    )


async def test_event_filters_and_disabled_webhooks(
    client: Client,
    http_client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    ctx: dict[str, Any],
    receiver: Receiver,
) -> None:
    every = await register(http_client, tenant, receiver.url("/every"))
    consents = await register(http_client, tenant, receiver.url("/consents"), ["consent_given"])
    off = await register(http_client, tenant, receiver.url("/off"))
    await client.delete(f"/v1/webhooks/{off['id']}", headers=tenant.auth("admin"))

    suppression = await write_suppression(client, tenant, "filter@example.no")
    given_consent = await write_consent(client, tenant, "filter@example.no")
    for event_id in (suppression, given_consent):
        await run_fan_out(ctx, tenant, event_id)
    made = {(d["webhook_id"], d["event_id"]) for d in await deliveries_of(db, tenant)}
    assert made == {(every["id"], suppression), (every["id"], given_consent), (consents["id"], given_consent)}
    for delivery in await deliveries_of(db, tenant):
        assert await deliver_webhook(ctx, tenant.id, delivery["id"]) == "delivered"
    seen = sorted((r.path, r.json()["type"]) for r in receiver.requests)
    assert seen == [
        ("/consents", "consent_given"),
        ("/every", "consent_given"),
        ("/every", "suppression_added"),
    ]


async def test_disabling_cancels_pending_deliveries(
    client: Client,
    http_client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    ctx: dict[str, Any],
    receiver: Receiver,
) -> None:
    made = await register(http_client, tenant, receiver.url())
    await run_fan_out(ctx, tenant, await write_suppression(client, tenant, "late@example.no"))
    [delivery] = await deliveries_of(db, tenant)
    await client.delete(f"/v1/webhooks/{made['id']}", headers=tenant.auth("admin"))
    assert await deliver_webhook(ctx, tenant.id, delivery["id"]) == "cancelled"
    assert receiver.requests == []
    listing = await client.get(f"/v1/webhooks/{made['id']}/deliveries", headers=tenant.auth("read"))
    assert [i["status"] for i in listing.json()["items"]] == ["cancelled"]


async def test_a_webhook_gets_only_events_recorded_after_it_was_registered(
    client: Client, http_client: Client, tenant: Tenant, db: asyncpg.Connection, ctx: dict[str, Any]
) -> None:
    before = await write_suppression(client, tenant, "early@example.no")
    await register(http_client, tenant, "http://127.0.0.1:9/hook")
    await run_fan_out(ctx, tenant, before)
    assert await deliveries_of(db, tenant) == []


async def test_deliveries_are_listed_newest_first_in_pages(
    client: Client, http_client: Client, tenant: Tenant, db: asyncpg.Connection, ctx: dict[str, Any]
) -> None:
    made = await register(http_client, tenant, "http://127.0.0.1:9/hook")
    events = [await write_suppression(client, tenant, f"page{i}@example.no") for i in range(5)]
    for event_id in events:
        await run_fan_out(ctx, tenant, event_id)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (
            await client.get(f"/v1/webhooks/{made['id']}/deliveries?{query}", headers=tenant.auth("read"))
        ).json()
        seen += [item["event_id"] for item in page["items"]]
        assert all(item["status"] == "pending" and item["attempts"] == [] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"{tenant.id}:{e}" for e in reversed(events)]


async def test_the_cron_re_enqueues_due_deliveries_that_lost_their_job(
    client: Client, http_client: Client, tenant: Tenant, db: asyncpg.Connection, ctx: dict[str, Any]
) -> None:
    await register(http_client, tenant, "http://127.0.0.1:9/hook")
    await run_fan_out(ctx, tenant, await write_suppression(client, tenant, "lost@example.no"))
    [delivery] = await deliveries_of(db, tenant)
    job_id = delivery_job_id(tenant.id, delivery["id"])
    assert await redeliver_due_webhooks(ctx) == 0  # still queued, and not yet past the grace period
    await _drop_queue(ctx["redis"])  # the job is lost (Redis restarted without persistence, say)
    await db.execute(
        "UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 minute' WHERE id = $1",
        delivery["id"],
    )
    assert await redeliver_due_webhooks(ctx) == 1
    assert await _queued(ctx["redis"]) == [job_id]
    assert await redeliver_due_webhooks(ctx) == 0  # queued again: not enqueued twice


async def test_a_real_worker_fans_out_and_delivers(
    client: Client,
    http_client: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    settings: Settings,
    receiver: Receiver,
) -> None:
    assert fan_out in EFFECTS and JOB_DELIVER_WEBHOOK in ENQUEUED_JOBS
    made = await register(http_client, tenant, receiver.url())
    event_id = await write_consent(client, tenant, "worker@example.no")
    queue_name = f"test-webhooks-worker-{secrets.token_hex(4)}"
    arq = await create_pool(redis_settings(settings.require_redis_url()), default_queue_name=queue_name)
    try:
        # the API enqueued the effects drain on the default queue too; this worker has a queue of its own
        assert await enqueue(arq, JOB_DRAIN_EFFECTS, tenant.id, job_id=f"test-{queue_name}")
        worker = Worker(
            functions=WorkerSettings.functions,
            on_startup=WorkerSettings.on_startup,
            on_shutdown=WorkerSettings.on_shutdown,
            redis_settings=redis_settings(settings.require_redis_url()),
            queue_name=queue_name,
            ctx={"settings": private_targets(settings)},
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
        )
        try:
            await asyncio.wait_for(worker.main(), timeout=60)
        finally:
            await worker.close()
        assert worker.jobs_complete == 2 and worker.jobs_failed == 0
    finally:
        await _drop_queue(arq)
        await arq.aclose()
    [request] = receiver.requests
    assert verify_signature(made["secret"], request.headers["suppress-signature"], request.body, time.time())
    assert request.json()["id"] == f"{tenant.id}:{event_id}" and request.json()["type"] == "consent_given"
    [delivery] = await deliveries_of(db, tenant)
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 1)


# -- the signature and the schedule (pure) -----------------------------------------------------------------

secrets_ = st.text(min_size=1, max_size=64)
bodies = st.binary(max_size=512)
times = st.integers(min_value=1_000_000_000, max_value=4_000_000_000)


@given(secret=secrets_, body=bodies, t=times, skew=st.integers(-DEFAULT_TOLERANCE, DEFAULT_TOLERANCE))
def test_a_signature_verifies_within_the_tolerance(secret: str, body: bytes, t: int, skew: int) -> None:
    assert verify_signature(secret, sign(secret, body, t), body, t + skew)


@given(secret=secrets_, body=bodies, other=bodies, t=times)
def test_a_tampered_body_fails(secret: str, body: bytes, other: bytes, t: int) -> None:
    assume(other != body)
    assert not verify_signature(secret, sign(secret, body, t), other, t)


@given(secret=secrets_, body=bodies, t=times, shift=st.integers(-DEFAULT_TOLERANCE, DEFAULT_TOLERANCE))
def test_a_tampered_timestamp_fails(secret: str, body: bytes, t: int, shift: int) -> None:
    assume(shift != 0)
    forged = sign(secret, body, t).replace(f"t={t},", f"t={t + shift},")
    assert not verify_signature(secret, forged, body, t + shift)


@given(secret=secrets_, other=secrets_, body=bodies, t=times)
def test_another_secret_fails(secret: str, other: str, body: bytes, t: int) -> None:
    assume(other != secret)
    assert not verify_signature(other, sign(secret, body, t), body, t)


@given(secret=secrets_, body=bodies, t=times, late=st.integers(1, 10**6), early=st.booleans())
def test_a_stale_timestamp_fails(secret: str, body: bytes, t: int, late: int, early: bool) -> None:
    now = t - DEFAULT_TOLERANCE - late if early else t + DEFAULT_TOLERANCE + late
    assert not verify_signature(secret, sign(secret, body, t), body, now)


@given(secret=secrets_, header=st.text(max_size=200), body=bodies, t=times)
def test_garbage_headers_never_verify(secret: str, header: str, body: bytes, t: int) -> None:
    assert not verify_signature(secret, header, body, t)


def test_signature_header_shape() -> None:
    header = sign("whsec_test", b'{"a":1}', 1_700_000_000)
    t, v1 = header.split(",")
    assert t == "t=1700000000" and v1.startswith("v1=") and len(v1) == 3 + 64
    # several v1 values (e.g. while a secret rotates) verify when any one matches
    assert verify_signature("whsec_test", f"{t},v1={'0' * 64},{v1}", b'{"a":1}', 1_700_000_000)
    assert not verify_signature("whsec_test", f"t=1700000000,t=1700000000,{v1}", b'{"a":1}', 1_700_000_000)


def test_the_retry_schedule() -> None:
    assert [retry_delay(n, 0.0) for n in range(1, 6)] == [10, 20, 40, 80, 160]
    assert retry_delay(20, 0.0) == MAX_RETRY_DELAY and retry_delay(1000, 0.0) == MAX_RETRY_DELAY
    assert 9 <= retry_delay(1, 0.999) <= 10
    assert 0 < len(EVENT_KINDS) == len(set(EVENT_KINDS)) and "unsubscribed" in EVENT_KINDS


def test_the_documented_verification_snippet_works() -> None:
    """docs/webhooks.md shows receivers how to verify; that code must agree with `sign`."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    [snippet] = [block for block in text.split("```python\n")[1:] if "def verify(" in block]
    namespace: dict[str, Any] = {}
    exec(snippet.split("```")[0], namespace)  # our own documentation, not input
    verify = namespace["verify"]
    body = b'{"id":"1:2","type":"unsubscribed"}'
    header = sign("whsec_doc", body, 1_700_000_000)
    assert verify("whsec_doc", header, body, now=1_700_000_000 + 299)
    assert not verify("whsec_doc", header, body, now=1_700_000_000 + 301)
    assert not verify("whsec_doc", header, body + b" ", now=1_700_000_000)
    assert not verify("whsec_other", header, body, now=1_700_000_000)
