"""HTTP helpers the test modules share: checks, topics, consents, suppressions, customers, links."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import PUBLIC_URL, Tenant, post_json

Client = AsyncTestClient[Litestar]


async def check(
    client: Client, tenant: Tenant, recipients: list[str], **message: Any
) -> list[dict[str, Any]]:
    body = {"channel": "email", "purpose": "marketing", **message, "recipients": recipients}
    response = await client.post("/v1/checks", json=body, headers=tenant.auth("check"))
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def flush_check_counts(client: Client) -> None:
    """Add the app's pending check outcome counts to check_counts now (it does so every second).

    The app runs in the test client's portal thread, on that thread's event loop and pool."""
    await asyncio.to_thread(client.blocking_portal.call, client.app.state.check_counts.flush)


async def decision(
    client: Client, tenant: Tenant, address: str, **message: Any
) -> tuple[bool, str | None, str | None]:
    [result] = await check(client, tenant, [address], **message)
    return result["allowed"], result["basis"], result["reason"]


async def topic(client: Client, tenant: Tenant, name: str, soft_opt_in: bool) -> None:
    await post_json(client, tenant, "/v1/topics", {"name": name, "soft_opt_in": soft_opt_in})


async def consent(client: Client, tenant: Tenant, address: str, **extra: Any) -> dict[str, Any]:
    body = {
        "channel": extra.pop("channel", "email"),
        "address": address,
        "source": "signup_form",
        **extra,
    }
    result: dict[str, Any] = await post_json(client, tenant, "/v1/consents", body)
    return result


async def suppress(client: Client, tenant: Tenant, address: str, reason: str, **extra: Any) -> None:
    body = {"channel": extra.pop("channel", "email"), "address": address, "reason": reason, **extra}
    await post_json(client, tenant, "/v1/suppressions", body)


async def customer(
    client: Client,
    tenant: Tenant,
    address: str,
    event: str,
    *,
    collected: bool = True,
    at: datetime | None = None,
    ref: str = "C-1",
    channel: str = "email",
) -> None:
    body: dict[str, Any] = {
        "customer_ref": ref,
        "event": event,
        "addresses": [{"channel": channel, "address": address, "collected_in_sale": collected}],
    }
    if at is not None:
        body["at"] = at.isoformat()
    await post_json(client, tenant, "/v1/customers", body)


ONE_CLICK = {"List-Unsubscribe": "One-Click"}


async def link(client: Client, tenant: Tenant, address: str, **message: Any) -> str:
    [result] = await check(client, tenant, [address], **message)
    assert result["allowed"], result
    url: str = result["unsubscribe_url"]
    return url.removeprefix(PUBLIC_URL)
