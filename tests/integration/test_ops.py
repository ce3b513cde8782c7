"""Probes, metrics, the OpenAPI document, and error shapes for unknown routes."""

from __future__ import annotations

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]


async def test_healthz_and_readyz(client: Client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    # no worker runs in this process; `suppress serve` reports that without being unready for it
    assert ready.json() == {"status": "ready", "database": "ok", "redis": "ok", "worker": "not running"}


async def test_metrics_count_checks_and_decisions(client: Client, tenant: Tenant) -> None:
    await client.post(
        "/v1/checks",
        headers=tenant.auth("check"),
        json={"channel": "sms", "purpose": "marketing", "recipients": ["bad", "also bad"]},
    )
    text = (await client.get("/metrics")).text
    assert 'suppress_checks_total{channel="sms",purpose="marketing"}' in text
    assert 'suppress_check_recipients_total{allowed="false",channel="sms",outcome="invalid_address"}' in text
    assert "suppress_check_duration_seconds_bucket" in text


async def test_openapi_documents_the_contract(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/v1/checks",
        "/v1/suppressions",
        "/v1/consents",
        "/v1/consents/withdraw",
        "/v1/customers",
        "/v1/topics",
        "/v1/recipients/{channel}/{address}",
        "/readyz",
    ):
        assert path in paths, path
    assert "BearerAuth" in schema["components"]["securitySchemes"]
    request = schema["components"]["schemas"]["CheckRequest"]
    assert set(request["required"]) == {"channel", "purpose", "recipients"}


async def test_unknown_route_and_method_are_problem_details(client: Client) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(
        "application/problem+json"
    )
    wrong = await client.get("/v1/checks")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
