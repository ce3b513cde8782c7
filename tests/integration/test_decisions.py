"""One decision for one recipient everywhere: the check, the recipient view and the list-health
snapshot read the same decision input (suppress.decisions), the tenant's consent validity applies
at decision time, and an objection is a fact about the customer that reaches every address linked
to it, before or after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import Tenant
from tests.support import consent, customer, decision, topic

Client = AsyncTestClient[Litestar]


async def view(client: Client, tenant: Tenant, address: str, channel: str = "email") -> dict[str, Any]:
    response = await client.get(f"/v1/recipients/{channel}/{address}", headers=tenant.auth("read"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def shown(body: dict[str, Any], topic_name: str | None = None) -> tuple[bool, str | None, str | None]:
    [row] = [d for d in body["marketing"] if d["topic"] == topic_name]
    return row["allowed"], row.get("basis"), row.get("reason")


async def set_validity(client: Client, tenant: Tenant, days: int | None) -> None:
    response = await client.patch(
        "/v1/settings", headers=tenant.auth("admin"), json={"consent_validity_days": days}
    )
    assert response.status_code == 200, response.text


# -- consent validity at decision time ---------------------------------------------------------------


async def test_the_recipient_view_shows_a_lapsed_consent_as_the_check_does(
    client: Client, tenant: Tenant
) -> None:
    await set_validity(client, tenant, 30)
    await consent(
        client, tenant, "lapsed@example.no", granted_at=(datetime.now(UTC) - timedelta(days=31)).isoformat()
    )
    assert await decision(client, tenant, "lapsed@example.no") == (False, None, "no_basis")
    assert shown(await view(client, tenant, "lapsed@example.no")) == (False, None, "no_basis")


async def test_changing_the_validity_applies_to_consents_given_before(client: Client, tenant: Tenant) -> None:
    granted = datetime.now(UTC) - timedelta(days=40)
    await consent(client, tenant, "older@example.no", granted_at=granted.isoformat())
    assert await decision(client, tenant, "older@example.no") == (True, "consent", None)
    await set_validity(client, tenant, 30)
    assert await decision(client, tenant, "older@example.no") == (False, None, "no_basis")
    assert shown(await view(client, tenant, "older@example.no")) == (False, None, "no_basis")
    await set_validity(client, tenant, 60)
    assert await decision(client, tenant, "older@example.no") == (True, "consent", None)
    await set_validity(client, tenant, None)
    assert await decision(client, tenant, "older@example.no") == (True, "consent", None)


# -- objection ---------------------------------------------------------------------------------------


async def object_to(client: Client, tenant: Tenant, ref: str) -> dict[str, Any]:
    response = await client.post(f"/v1/customers/{ref}/object", headers=tenant.auth("write"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_objection_covers_addresses_linked_after_it(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "offers", True)
    await customer(client, tenant, "first@example.no", "purchase", ref="OBJ-LATER")
    assert await decision(client, tenant, "first@example.no", topic="offers") == (
        True,
        "customer_relationship",
        None,
    )
    await object_to(client, tenant, "OBJ-LATER")
    # a later purchase brings a new email address and a phone number
    await customer(client, tenant, "second@example.no", "purchase", ref="OBJ-LATER")
    await customer(client, tenant, "+4791112222", "purchase", ref="OBJ-LATER", channel="sms")
    linked = (("second@example.no", "email"), ("+4791112222", "sms"), ("first@example.no", "email"))
    for address, channel in linked:
        for topic_name in ("offers", None):
            assert await decision(client, tenant, address, topic=topic_name, channel=channel) == (
                False,
                None,
                "objected",
            ), (address, topic_name)
        assert shown(await view(client, tenant, address, channel), "offers") == (False, None, "objected")
    # a receipt is no direct marketing: an objection does not stop it
    assert await decision(client, tenant, "second@example.no", purpose="transactional") == (
        True,
        "transactional",
        None,
    )
