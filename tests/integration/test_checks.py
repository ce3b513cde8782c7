"""POST /v1/checks through the HTTP app: every rule of POLICY.md's decision list, the contract,
and bad input that must get a 4xx and change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.addresses import AddressHasher
from suppress.checks import MAX_RECIPIENTS
from suppress.tokens import MINT_MANY_FROM
from tests.conftest import PUBLIC_URL, Tenant, post_json
from tests.support import check, consent, customer, decision, flush_check_counts, suppress, topic

Client = AsyncTestClient[Litestar]


# -- rule 1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["not-an-address", "a@b", "two@@example.no", "", " "])
async def test_rule1_invalid_address_is_denied(client: Client, tenant: Tenant, address: str) -> None:
    assert await decision(client, tenant, address) == (False, None, "invalid_address")


async def test_rule1_invalid_phone_is_denied(client: Client, tenant: Tenant) -> None:
    assert await decision(client, tenant, "12", channel="sms") == (False, None, "invalid_address")


# -- rules 2 and 3 (erasure and restriction have their own endpoints later; state set directly) --


async def _set_flag(
    db: asyncpg.Connection, client: Client, tenant: Tenant, address: str, column: str
) -> None:
    await consent(client, tenant, address)
    await db.execute(
        f"UPDATE recipients SET {column} = now() WHERE tenant_id = $1",  # column from a fixed list below
        tenant.id,
    )


@pytest.mark.parametrize("purpose", ["marketing", "transactional"])
async def test_rule2_erased_is_denied_for_any_purpose(
    db: asyncpg.Connection, client: Client, tenant: Tenant, purpose: str
) -> None:
    await _set_flag(db, client, tenant, "gone@example.no", "erased_at")
    assert await decision(client, tenant, "gone@example.no", purpose=purpose) == (
        False,
        None,
        "erased",
    )


@pytest.mark.parametrize("purpose", ["marketing", "transactional"])
async def test_rule3_restricted_is_denied_for_any_purpose(
    db: asyncpg.Connection, client: Client, tenant: Tenant, purpose: str
) -> None:
    await _set_flag(db, client, tenant, "paused@example.no", "restricted_at")
    assert await decision(client, tenant, "paused@example.no", purpose=purpose) == (
        False,
        None,
        "restricted",
    )


# -- rule 4 ---------------------------------------------------------------------------------


async def test_rule4_transactional_ignores_marketing_opt_outs(client: Client, tenant: Tenant) -> None:
    await suppress(client, tenant, "left@example.no", "unsubscribed")
    await suppress(client, tenant, "angry@example.no", "complained")
    for address in ("left@example.no", "angry@example.no", "stranger@example.no"):
        assert await decision(client, tenant, address, purpose="transactional") == (
            True,
            "transactional",
            None,
        )


async def test_rule4_transactional_denied_for_hard_bounce(client: Client, tenant: Tenant) -> None:
    await suppress(client, tenant, "dead@example.no", "hard_bounced")
    assert await decision(client, tenant, "dead@example.no", purpose="transactional") == (
        False,
        None,
        "hard_bounced",
    )


async def test_rule4_transactional_gets_no_unsubscribe_link(client: Client, tenant: Tenant) -> None:
    [result] = await check(client, tenant, ["receipt@example.no"], purpose="transactional")
    assert result["allowed"] and "unsubscribe_url" not in result


# -- rule 5 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["unsubscribed", "complained", "hard_bounced", "soft_bounced", "manual"])
async def test_rule5_global_suppression_denies_even_with_consent(
    client: Client, tenant: Tenant, reason: str
) -> None:
    await consent(client, tenant, "someone@example.no")
    await suppress(client, tenant, "someone@example.no", reason)
    assert await decision(client, tenant, "someone@example.no") == (False, None, reason)


async def test_rule5_expired_suppression_no_longer_denies(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await consent(client, tenant, "bounce@example.no")
    await suppress(client, tenant, "bounce@example.no", "soft_bounced")
    assert (await decision(client, tenant, "bounce@example.no"))[2] == "soft_bounced"
    await db.execute(
        "UPDATE recipients SET suppression_expires = ARRAY[now() - interval '1 second'] WHERE tenant_id = $1",
        tenant.id,
    )
    assert await decision(client, tenant, "bounce@example.no") == (True, "consent", None)


async def test_rule5_suppression_is_per_channel(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "+4791234567", channel="sms")
    await consent(client, tenant, "ola@example.no")
    await suppress(client, tenant, "+4791234567", "unsubscribed", channel="sms")
    assert await decision(client, tenant, "+47 912 34 567", channel="sms") == (
        False,
        None,
        "unsubscribed",
    )
    assert await decision(client, tenant, "ola@example.no") == (True, "consent", None)


async def test_rule5_strongest_reason_is_reported(client: Client, tenant: Tenant) -> None:
    await suppress(client, tenant, "both@example.no", "unsubscribed")
    await suppress(client, tenant, "both@example.no", "complained")
    assert await decision(client, tenant, "both@example.no") == (False, None, "complained")


# -- rule 6 ---------------------------------------------------------------------------------


async def test_rule6_topic_unsubscribe_denies_that_topic_only(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", False)
    await topic(client, tenant, "offers", False)
    await consent(client, tenant, "reader@example.no")
    await suppress(client, tenant, "reader@example.no", "unsubscribed", topic="news")
    assert await decision(client, tenant, "reader@example.no", topic="news") == (
        False,
        None,
        "unsubscribed",
    )
    assert await decision(client, tenant, "reader@example.no", topic="offers") == (
        True,
        "consent",
        None,
    )


# -- rule 7 ---------------------------------------------------------------------------------


async def test_rule7_consent_all_topics_covers_every_topic(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", False)
    await consent(client, tenant, "fan@example.no")
    assert await decision(client, tenant, "fan@example.no", topic="news") == (True, "consent", None)
    assert await decision(client, tenant, "fan@example.no") == (True, "consent", None)


async def test_rule7_topic_consent_covers_only_its_topic(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", False)
    await topic(client, tenant, "offers", False)
    await consent(client, tenant, "picky@example.no", topic="news")
    assert await decision(client, tenant, "picky@example.no", topic="news") == (
        True,
        "consent",
        None,
    )
    assert await decision(client, tenant, "picky@example.no", topic="offers") == (
        False,
        None,
        "no_basis",
    )
    assert await decision(client, tenant, "picky@example.no") == (False, None, "no_basis")


async def test_rule7_partner_offers_need_partner_consent(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "own@example.no")
    await consent(client, tenant, "partner@example.no", partners=True)
    assert await decision(client, tenant, "own@example.no", offer="partner") == (
        False,
        None,
        "no_basis",
    )
    assert await decision(client, tenant, "partner@example.no", offer="partner") == (
        True,
        "consent",
        None,
    )


# -- rule 8 ---------------------------------------------------------------------------------


async def test_rule8_recent_purchase_is_a_basis_for_soft_opt_in_topics(
    client: Client, tenant: Tenant
) -> None:
    await topic(client, tenant, "news", True)
    await topic(client, tenant, "offers", False)
    await customer(client, tenant, "buyer@example.no", "purchase", at=datetime.now(UTC) - timedelta(days=30))
    assert await decision(client, tenant, "buyer@example.no", topic="news") == (
        True,
        "customer_relationship",
        None,
    )
    assert await decision(client, tenant, "buyer@example.no", topic="offers") == (
        False,
        None,
        "no_basis",
    )
    assert await decision(client, tenant, "buyer@example.no", topic="news", offer="partner") == (
        False,
        None,
        "no_basis",
    )


async def test_a_topic_changed_is_decided_by_its_new_soft_opt_in_at_once(
    client: Client, tenant: Tenant
) -> None:
    """Checks remember a topic briefly; changing it through the API makes them forget it."""
    await topic(client, tenant, "flip", False)
    await customer(client, tenant, "flip@example.no", "purchase", at=datetime.now(UTC) - timedelta(days=3))
    assert await decision(client, tenant, "flip@example.no", topic="flip", campaign="c") == (
        False,
        None,
        "no_basis",
    )
    await topic(client, tenant, "flip", True)
    assert await decision(client, tenant, "flip@example.no", topic="flip", campaign="c") == (
        True,
        "customer_relationship",
        None,
    )
    await topic(client, tenant, "flip", False)
    assert (await decision(client, tenant, "flip@example.no", topic="flip", campaign="c"))[0] is False


async def test_rule8_old_purchase_and_ended_agreement_are_no_basis(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", True)
    await customer(
        client,
        tenant,
        "old@example.no",
        "purchase",
        at=datetime.now(UTC) - timedelta(days=400),
        ref="C-old",
    )
    assert await decision(client, tenant, "old@example.no", topic="news") == (
        False,
        None,
        "no_basis",
    )
    await customer(
        client,
        tenant,
        "member@example.no",
        "agreement_started",
        ref="C-m",
        at=datetime.now(UTC) - timedelta(days=900),
    )
    assert await decision(client, tenant, "member@example.no", topic="news") == (
        True,
        "customer_relationship",
        None,
    )
    await customer(client, tenant, "member@example.no", "agreement_ended", ref="C-m")
    assert await decision(client, tenant, "member@example.no", topic="news") == (
        False,
        None,
        "no_basis",
    )


async def test_rule8_address_not_collected_in_a_sale_is_no_basis(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", True)
    await customer(client, tenant, "cc@example.no", "purchase", collected=False)
    assert await decision(client, tenant, "cc@example.no", topic="news") == (
        False,
        None,
        "no_basis",
    )


async def test_rule8_unsubscribe_beats_relationship(client: Client, tenant: Tenant) -> None:
    await topic(client, tenant, "news", True)
    await customer(client, tenant, "quit@example.no", "purchase")
    await post_json(
        client, tenant, "/v1/consents/withdraw", {"channel": "email", "address": "quit@example.no"}
    )
    assert await decision(client, tenant, "quit@example.no", topic="news") == (
        False,
        None,
        "unsubscribed",
    )


# -- rule 9 ---------------------------------------------------------------------------------


async def test_rule9_nothing_known_is_no_basis(client: Client, tenant: Tenant) -> None:
    assert await decision(client, tenant, "stranger@example.no") == (False, None, "no_basis")


# -- the contract ------------------------------------------------------------------------------


async def test_results_in_input_order_with_duplicates_and_summary(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "a@example.no")
    await suppress(client, tenant, "b@example.no", "complained")
    recipients = ["b@example.no", "A@Example.no", "junk", "c@example.no", "a@example.no"]
    response = await client.post(
        "/v1/checks",
        headers=tenant.auth("check"),
        json={"channel": "email", "purpose": "marketing", "recipients": recipients},
    )
    body = response.json()
    assert [r["recipient"] for r in body["results"]] == recipients
    assert [r["reason"] for r in body["results"]] == [
        "complained",
        None,
        "invalid_address",
        "no_basis",
        None,
    ]
    assert body["summary"] == {
        "allowed": 2,
        "denied": 3,
        "reasons": {"complained": 1, "invalid_address": 1, "no_basis": 1},
        "bases": {"consent": 2},
    }


async def test_allowed_marketing_email_gets_one_click_headers(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "link@example.no")
    [result] = await check(client, tenant, ["link@example.no"], campaign="spring")
    url = result["unsubscribe_url"]
    assert url.startswith(PUBLIC_URL + "/u/") and len(url) <= 160
    assert "link" not in url and "example" not in url.removeprefix(PUBLIC_URL)
    assert result["list_unsubscribe"] == f"<{url}>"
    assert result["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"


async def test_token_carries_tenant_topic_campaign_and_recipient(
    client: Client, tenant: Tenant, app: Litestar
) -> None:
    await topic(client, tenant, "news", False)
    await consent(client, tenant, "tok@example.no")
    [result] = await check(client, tenant, ["tok@example.no"], topic="news", campaign="spring")
    claims = app.state.keyring.verify(result["unsubscribe_url"].rsplit("/", 1)[1])
    assert claims.tenant_id == tenant.id and claims.channel == "email"
    assert claims.topic_id is not None and claims.campaign_id is not None
    assert abs(claims.issued_at - datetime.now(UTC).timestamp()) < 60


async def test_every_link_of_a_large_batch_names_its_own_recipient(
    client: Client, tenant: Tenant, app: Litestar, hasher: AddressHasher
) -> None:
    """Enough allowed recipients for their tokens to be minted in one vectorised pass."""
    people = [f"many{i}@example.no" for i in range(MINT_MANY_FROM + 8)]
    for address in people:
        await consent(client, tenant, address)
    batch = [*people, "nobody@example.no", people[0].upper()]
    results = await check(client, tenant, batch, campaign="many-links")
    assert [r["recipient"] for r in results] == batch
    assert not results[-2]["allowed"] and "unsubscribe_url" not in results[-2]
    for address, result in zip([*people, people[0]], [*results[:-2], results[-1]], strict=True):
        url = result["unsubscribe_url"]
        claims = app.state.keyring.verify(url.rsplit("/", 1)[1])
        assert claims.address_hash == hasher.hash("email", address)
        assert claims.tenant_id == tenant.id and claims.campaign_id is not None
        assert result["list_unsubscribe"] == f"<{url}>"
        assert result["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"


async def test_sms_gets_a_link_but_no_email_headers(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "+4791234567", channel="sms")
    [result] = await check(client, tenant, ["91234567"], channel="sms")
    assert result["allowed"] and result["unsubscribe_url"]
    assert "list_unsubscribe" not in result


async def test_batch_outcomes_are_counted_per_campaign(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    await consent(client, tenant, "counted@example.no")
    for _ in range(2):
        await check(
            client,
            tenant,
            ["counted@example.no", "x@example.no", "y@example.no"],
            campaign="autumn",
        )
    await flush_check_counts(client)
    rows = await db.fetch(
        """SELECT cc.allowed, cc.outcome, cc.recipients FROM check_counts cc
           JOIN campaigns c ON c.id = cc.campaign_id WHERE cc.tenant_id = $1 AND c.name = 'autumn'
           ORDER BY cc.outcome""",
        tenant.id,
    )
    assert [(r["allowed"], r["outcome"], r["recipients"]) for r in rows] == [
        (True, "consent", 2),
        (False, "no_basis", 4),
    ]


async def test_tenants_do_not_see_each_other(
    client: Client, tenant: Tenant, db: asyncpg.Connection, queries: Any
) -> None:
    from suppress.tenants import create_tenant

    other_key = (await create_tenant(db, queries, f"other-{tenant.name}")).api_key
    await consent(client, tenant, "shared@example.no")
    response = await client.post(
        "/v1/checks",
        headers={"Authorization": f"Bearer {other_key}"},
        json={"channel": "email", "purpose": "marketing", "recipients": ["shared@example.no"]},
    )
    assert response.json()["results"][0]["reason"] == "no_basis"


# -- bad input ---------------------------------------------------------------------------------


async def _count_rows(db: asyncpg.Connection, tenant: Tenant) -> tuple[int, ...]:
    row = await db.fetchrow(
        """SELECT (SELECT count(*) FROM check_counts WHERE tenant_id = $1),
                  (SELECT count(*) FROM campaigns WHERE tenant_id = $1),
                  (SELECT count(*) FROM events WHERE tenant_id = $1),
                  (SELECT count(*) FROM recipients WHERE tenant_id = $1)""",
        tenant.id,
    )
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "malformed_request"),
        (b"[]", 422, "invalid_request"),
        (
            b'{"channel": "fax", "purpose": "marketing", "recipients": ["a@example.no"]}',
            422,
            "invalid_request",
        ),
        (
            b'{"channel": "email", "purpose": "marketing", "recipients": "a@example.no"}',
            422,
            "invalid_request",
        ),
        (
            b'{"channel": "email", "purpose": "marketing", "recipients": [1]}',
            422,
            "invalid_request",
        ),
        (
            b'{"channel": "email", "purpose": "marketing", "recipients": ["a@example.no"], "extra": 1}',
            422,
            "invalid_request",
        ),
        (b'{"channel": "email", "purpose": "marketing", "recipients": []}', 422, "invalid_input"),
        (
            b'{"channel": "email", "purpose": "marketing", "topic": "nope", "campaign": "c1", '
            b'"recipients": ["a@example.no"]}',
            422,
            "unknown_topic",
        ),
    ],
)
async def test_bad_check_requests_get_problem_details_and_change_nothing(
    db: asyncpg.Connection, client: Client, tenant: Tenant, body: bytes, status: int, code: str
) -> None:
    before = await _count_rows(db, tenant)
    response = await client.post(
        "/v1/checks",
        content=body,
        headers={**tenant.auth("check"), "Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code and problem["status"] == status and problem["type"].endswith(code)
    assert await _count_rows(db, tenant) == before


async def test_more_than_the_batch_limit_is_413(
    db: asyncpg.Connection, client: Client, tenant: Tenant
) -> None:
    before = await _count_rows(db, tenant)
    recipients = [f"u{i}@example.no" for i in range(MAX_RECIPIENTS + 1)]
    response = await client.post(
        "/v1/checks",
        headers=tenant.auth("check"),
        json={"channel": "email", "purpose": "marketing", "recipients": recipients},
    )
    assert response.status_code == 413 and response.json()["code"] == "batch_too_large"
    assert await _count_rows(db, tenant) == before


async def test_a_full_batch_of_the_limit_is_answered(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, "u7@example.no")
    recipients = [f"u{i}@example.no" for i in range(MAX_RECIPIENTS)]
    results = await check(client, tenant, recipients)
    assert len(results) == MAX_RECIPIENTS
    assert results[7]["allowed"] and not results[8]["allowed"]


async def test_oversized_body_is_413_problem(client: Client, tenant: Tenant) -> None:
    body = b'{"channel":"email","purpose":"marketing","recipients":["' + b"a" * (33 * 1024 * 1024) + b'"]}'
    response = await client.post(
        "/v1/checks",
        content=body,
        headers={**tenant.auth("check"), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
