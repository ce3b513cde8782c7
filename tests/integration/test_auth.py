"""Bearer API keys: scopes, tenant isolation, forged and revoked keys."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.tenants import Authenticator, hash_api_key
from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]
CHECK = {"channel": "email", "purpose": "marketing", "recipients": ["a@example.no"]}
SUPPRESSION = {"channel": "email", "address": "a@example.no", "reason": "manual"}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer sk_short",
        "Bearer sk_" + "A" * 43,  # right shape, unknown key
        "Bearer pk_" + "A" * 43,
        ("Bearer sk_" + "é" * 43).encode(),
        ("Bearer sk_" + "A" * 42 + "é").encode("latin-1"),
    ],
)
async def test_missing_or_forged_keys_are_401(client: Client, authorization: str | bytes | None) -> None:
    headers: dict[str, str | bytes] = {} if authorization is None else {"Authorization": authorization}
    response = await client.post("/v1/checks", json=CHECK, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize(
    ("scope", "method", "path", "body", "allowed"),
    [
        ("check", "POST", "/v1/checks", CHECK, True),
        ("read", "POST", "/v1/checks", CHECK, False),
        ("write", "POST", "/v1/checks", CHECK, False),
        ("write", "POST", "/v1/suppressions", SUPPRESSION, True),
        ("check", "POST", "/v1/suppressions", SUPPRESSION, False),
        ("read", "POST", "/v1/suppressions", SUPPRESSION, False),
        ("read", "GET", "/v1/suppressions", None, True),
        ("check", "GET", "/v1/suppressions", None, False),
        ("read", "GET", "/v1/recipients/email/a@example.no", None, True),
        ("write", "GET", "/v1/recipients/email/a@example.no", None, False),
        ("admin", "POST", "/v1/checks", CHECK, True),
        ("admin", "POST", "/v1/suppressions", SUPPRESSION, True),
    ],
)
async def test_scopes(
    client: Client, tenant: Tenant, scope: str, method: str, path: str, body: object, allowed: bool
) -> None:
    response = await client.request(method, path, json=body, headers=tenant.auth(scope))
    if allowed:
        assert response.status_code < 300, response.text
    else:
        assert response.status_code == 403 and response.json()["code"] == "forbidden"


@pytest.mark.parametrize("body", [b"{not json", b'{"channel": "pigeon"}'])
async def test_check_authenticates_before_reading_the_body(
    client: Client, tenant: Tenant, body: bytes
) -> None:
    """The check route's caller is checked before its body is read, as a guard does: no key is 401
    and a key without `check` is 403, whatever the body."""
    json_body = {"Content-Type": "application/json"}
    anonymous = await client.post("/v1/checks", content=body, headers=json_body)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    assert anonymous.json()["code"] == "not_authenticated"
    for scope in ("read", "write"):
        refused = await client.post("/v1/checks", content=body, headers={**json_body, **tenant.auth(scope)})
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["code"] == "forbidden"


async def test_forbidden_write_changes_nothing(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await client.post("/v1/suppressions", json=SUPPRESSION, headers=tenant.auth("read"))
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id) == 0


async def test_revoked_key_stops_working(
    db: asyncpg.Connection, client: Client, tenant: Tenant, app: Litestar
) -> None:
    await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1",
        hash_api_key(tenant.keys["check"]),
    )
    app.state.authenticator._cache.clear()  # the short cache would otherwise hold the key for a few seconds
    response = await client.post("/v1/checks", json=CHECK, headers=tenant.auth("check"))
    assert response.status_code == 401


async def test_revoked_key_is_refused_by_checks_once_the_cache_entry_expires(
    db: asyncpg.Connection, client: Client, tenant: Tenant, app: Litestar
) -> None:
    """The check route's hook uses the authenticator's short cache: a revoked key works at most
    `ttl` seconds longer (5 s in service; shortened here), then gets 401."""
    app.state.authenticator = Authenticator(app.state.pool, app.state.queries, ttl=0.5)
    headers = tenant.auth("check")
    assert (await client.post("/v1/checks", json=CHECK, headers=headers)).status_code == 200
    await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", hash_api_key(tenant.keys["check"])
    )
    assert (await client.post("/v1/checks", json=CHECK, headers=headers)).status_code == 200  # cached
    await asyncio.sleep(0.6)
    refused = await client.post("/v1/checks", json=CHECK, headers=headers)
    assert refused.status_code == 401 and refused.json()["code"] == "not_authenticated"


async def test_keys_are_stored_hashed(db: asyncpg.Connection, tenant: Tenant) -> None:
    stored = await db.fetch("SELECT key_hash, prefix FROM api_keys WHERE tenant_id = $1", tenant.id)
    plaintexts = set(tenant.keys.values())
    for row in stored:
        assert row["key_hash"] not in {k.encode() for k in plaintexts}
        assert len(row["prefix"]) == 8
    assert {r["key_hash"] for r in stored} == {hash_api_key(k) for k in plaintexts}


async def test_tenant_cannot_read_another_tenants_recipient(
    client: Client, tenant: Tenant, db: asyncpg.Connection, queries: object
) -> None:
    from suppress.tenants import create_tenant

    await client.post("/v1/suppressions", json=SUPPRESSION, headers=tenant.auth("write"))
    other = await create_tenant(db, queries, f"nosy-{tenant.name}")  # type: ignore[arg-type]
    view = (
        await client.get(
            "/v1/recipients/email/a@example.no",
            headers={"Authorization": f"Bearer {other.api_key}"},
        )
    ).json()
    assert view["known"] is False and view["events"] == []
    page = (await client.get("/v1/suppressions", headers={"Authorization": f"Bearer {other.api_key}"})).json()
    assert page["items"] == []
