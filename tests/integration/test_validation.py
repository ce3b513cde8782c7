"""Validation problems say, for each field named as in the API, what is wrong in words."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]


async def _problem(response: Any, status: int) -> tuple[str, list[dict[str, Any]]]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    return body["detail"], body.get("errors", [])


async def test_an_enum_error_lists_the_allowed_values(client: Client, tenant: Tenant) -> None:
    detail, errors = await _problem(
        await client.post(
            "/v1/checks",
            json={"channel": "fax", "purpose": "marketing", "recipients": ["a@example.no"]},
            headers=tenant.auth("check"),
        ),
        422,
    )
    assert errors == [
        {"field": "channel", "source": "body", "message": "must be one of: email, sms (got 'fax')"}
    ]
    assert detail == "channel must be one of: email, sms (got 'fax')"
    _, errors = await _problem(
        await client.get("/v1/suppressions?reason=bored", headers=tenant.auth("read")), 400
    )
    assert errors[0]["field"] == "reason" and errors[0]["source"] == "query"
    assert "complained, hard_bounced, manual, soft_bounced, unsubscribed" in errors[0]["message"]


async def test_a_nested_field_is_named_by_its_path(client: Client, tenant: Tenant) -> None:
    _, errors = await _problem(
        await client.post(
            "/v1/customers",
            json={
                "customer_ref": "c-1",
                "event": "purchase",
                "addresses": [{"channel": "fax", "address": "a@example.no", "collected_in_sale": True}],
            },
            headers=tenant.auth("write"),
        ),
        422,
    )
    assert errors == [
        {
            "field": "addresses[0].channel",
            "source": "body",
            "message": "must be one of: email, sms (got 'fax')",
        }
    ]


async def test_a_missing_query_parameter_is_named_with_its_values(client: Client, tenant: Tenant) -> None:
    detail, errors = await _problem(
        await client.post("/v1/imports?format=csv", content=b"x", headers=tenant.auth("write")), 400
    )
    assert errors == [
        {
            "field": "kind",
            "source": "query",
            "message": "is required; one of: consents, customers, suppressions",
        }
    ]
    assert detail.startswith("kind is required")


async def test_a_parameter_is_named_as_in_the_api(client: Client, tenant: Tenant) -> None:
    _, errors = await _problem(
        await client.post(
            "/v1/imports?kind=suppressions&format=xml", content=b"x", headers=tenant.auth("write")
        ),
        400,
    )
    assert [e["field"] for e in errors] == ["format"]
    assert errors[0]["message"].startswith("must be one of: csv, mailgun, ndjson, sendgrid, ses")
    _, errors = await _problem(
        await client.post("/v1/imports?kind=suppressions", content=b"x", headers=tenant.auth("write")), 400
    )
    assert [e["field"] for e in errors] == ["format"]


async def test_the_topic_name_rule_is_said_in_words(client: Client, tenant: Tenant) -> None:
    detail, errors = await _problem(
        await client.post("/v1/topics", json={"name": "news letter!"}, headers=tenant.auth("write")), 422
    )
    message = errors[0]["message"]
    assert errors[0]["field"] == "name"
    assert "a letter or digit first" in message and "at most 100 characters" in message
    assert "^" not in message and "regex" not in detail


async def test_unknown_and_missing_fields_are_named(client: Client, tenant: Tenant) -> None:
    _, errors = await _problem(
        await client.post("/v1/topics", json={"name": "ok", "colour": "red"}, headers=tenant.auth("write")),
        422,
    )
    assert errors == [
        {
            "field": "colour",
            "source": "body",
            "message": "is not a field of this request; known fields: name, soft_opt_in, display",
        }
    ]
    _, errors = await _problem(await client.post("/v1/topics", json={}, headers=tenant.auth("write")), 422)
    assert errors == [{"field": "name", "source": "body", "message": "is required"}]
    _, errors = await _problem(await client.post("/v1/topics", json=[1], headers=tenant.auth("write")), 422)
    assert errors == [{"field": None, "source": "body", "message": "the body must be a JSON object"}]


async def test_bounds_types_and_times_are_said_in_words(client: Client, tenant: Tenant) -> None:
    _, errors = await _problem(await client.get("/v1/suppressions?limit=0", headers=tenant.auth("read")), 400)
    assert errors == [{"field": "limit", "source": "query", "message": "must be at least 1"}]
    _, errors = await _problem(
        await client.post("/v1/topics", json={"name": 5}, headers=tenant.auth("write")), 422
    )
    assert errors[0]["message"] == "must be a string, not an integer"
    _, errors = await _problem(
        await client.post(
            "/v1/suppressions",
            json={"channel": "email", "address": "a@example.no", "reason": "manual", "expires_at": "soon"},
            headers=tenant.auth("write"),
        ),
        422,
    )
    assert errors[0]["field"] == "expires_at" and "RFC 3339" in errors[0]["message"]


async def test_lifting_nothing_says_so_in_plain_words(client: Client, tenant: Tenant) -> None:
    detail, _ = await _problem(
        await client.delete("/v1/suppressions/email/nobody@example.no", headers=tenant.auth("write")), 404
    )
    assert detail == "nobody@example.no has no suppression on email for all topics"
    detail, _ = await _problem(
        await client.delete(
            "/v1/suppressions/email/nobody@example.no?reason=manual", headers=tenant.auth("write")
        ),
        404,
    )
    assert detail == "nobody@example.no has no 'manual' suppression on email for all topics"


async def test_a_nul_character_is_refused_and_nothing_is_written(
    client: Client, tenant: Tenant, db: asyncpg.Connection
) -> None:
    # Found by the contract test: PostgreSQL stores no U+0000 in text or jsonb, and the failed
    # statement surfaced as a 500.
    bodies = [
        {"channel": "email", "address": "ola@example.no", "source": "form", "evidence": {"a\u0000b": 1}},
        {"channel": "email", "address": "ola@example.no", "source": "form\u0000", "evidence": {}},
    ]
    for body in bodies:
        detail, _ = await _problem(
            await client.post("/v1/consents", json=body, headers=tenant.auth("write")), 422
        )
        assert "NUL" in detail
    assert await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id) == 0
    assert await db.fetchval("SELECT count(*) FROM consents WHERE tenant_id = $1", tenant.id) == 0
