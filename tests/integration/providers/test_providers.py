"""Provider webhooks over HTTP: configurations (credentials sealed, never shown or logged) and
each provider's inbound endpoint, verified exactly as the provider signs, with the shared signed
fixtures and with requests signed here. Wrong key, altered body, stale timestamp, wrong TopicArn,
wrong certificate URL, replayed token: refused, nothing stored. A redelivery: a no-op.

Helpers here (signers, the fake certificate fetcher, the worker ctx) are shared with
test_providers_mapping.py.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar
from litestar.testing import AsyncTestClient

from suppress.providers.configs import SendGridIn
from suppress.sql import Queries
from tests.conftest import Tenant
from tests.integration.providers.conftest import (
    FIXTURE_CERT_URL,
    POSTMARK_BOUNCE,
    SECRETS,
    SES_ARN,
    Clock,
    FakeFetcher,
    SendGridSigner,
    SnsSigner,
    apply_pending,
    basic,
    configure,
    events_of,
    every_kind,
    fixture,
    inbound_path,
    ledger,
    mailgun_body,
    queued,
    refused,
    ses_bounce,
    sns_notification,
    twilio_signature,
    vonage_sig,
)
from tests.support import consent, decision, topic

Client = AsyncTestClient[Litestar]


async def test_each_kind_is_stored_sealed_and_listed_without_credentials(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await topic(pclient, tenant, "newsletter", False)
    signer = SendGridSigner()
    created = [await configure(pclient, tenant, body) for body in every_kind(signer.verification_key)]
    assert [c["kind"] for c in created] == ["ses", "sendgrid", "mailgun", "postmark", "twilio", "vonage"]
    for made in created:
        assert made["inbound_url"] == f"https://unsub.example.test/v1/providers/{made['kind']}/{made['id']}"
    assert created[0]["settings"] == {"topic_arns": [SES_ARN], "signature_versions": ["1", "2"]}
    assert created[0]["credentials"] == []
    assert created[1]["settings"]["topics"] == {"1234": "newsletter"}
    assert created[3]["credentials"] == ["password", "username"]
    assert created[5]["settings"] == {"signature_method": "sha512", "replies": "always"}
    listing = await pclient.get("/v1/providers", headers=tenant.auth("read"))
    assert listing.status_code == 200
    assert [p["id"] for p in listing.json()] == sorted((c["id"] for c in created), reverse=True)
    everything = listing.text + "".join(json.dumps(c) for c in created) + caplog.text
    rows = await db.fetch("SELECT secret_box, settings::text FROM providers WHERE tenant_id = $1", tenant.id)
    for secret in [s for s in SECRETS.values() if s] + [signer.verification_key]:
        assert secret not in everything
        assert all(
            secret.encode() not in bytes(r["secret_box"]) and secret not in r["settings"] for r in rows
        )


async def test_configuration_needs_admin_and_listing_needs_read(pclient: Client, tenant: Tenant) -> None:
    body = {"kind": "mailgun", "signing_key": SECRETS["mailgun"]}
    for scope in ("check", "write", "read"):
        response = await pclient.post("/v1/providers", json=body, headers=tenant.auth(scope))
        assert response.status_code == 403, scope
    assert (await pclient.post("/v1/providers", json=body)).status_code == 401
    assert (await pclient.get("/v1/providers", headers=tenant.auth("check"))).status_code == 403


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"kind": "ses", "topic_arns": ["arn:aws:s3:::bucket"]}, 422),
        ({"kind": "ses", "topic_arns": []}, 422),
        ({"kind": "ses", "topic_arns": [SES_ARN], "signature_versions": ["3"]}, 422),
        ({"kind": "ses", "topic_arns": [SES_ARN], "topics": {"news": "no-such-topic"}}, 422),
        (
            {"kind": "sendgrid", "verification_key": "not a key at all, but long enough to pass the length"},
            422,
        ),
        ({"kind": "mailgun", "signing_key": "k" * 20, "max_age_seconds": 5}, 422),
        ({"kind": "postmark", "username": "only-user"}, 422),
        ({"kind": "postmark", "header_secret": "too-short"}, 422),
        ({"kind": "postmark", "header_name": "Authorization", "header_secret": "s" * 32}, 422),
        ({"kind": "twilio", "auth_token": "t" * 32, "url": "http://hooks.example.com/x"}, 422),
        ({"kind": "vonage", "signature_secret": "v" * 20, "signature_method": "md4"}, 422),
        ({"kind": "sveve", "secret": "x" * 20}, 422),
        ({"kind": "mailgun", "signing_key": "k" * 20, "extra": 1}, 422),
    ],
)
async def test_bad_configurations_are_refused(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, body: dict[str, Any], status: int
) -> None:
    response = await pclient.post("/v1/providers", json=body, headers=tenant.auth("admin"))
    assert response.status_code == status, response.text
    assert await db.fetchval("SELECT count(*) FROM providers WHERE tenant_id = $1", tenant.id) == 0


async def test_sendgrid_rsa_key_is_refused(pclient: Client, tenant: Tenant) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = rsa_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = {"kind": "sendgrid", "verification_key": base64.b64encode(der).decode()}
    response = await pclient.post("/v1/providers", json=body, headers=tenant.auth("admin"))
    assert response.status_code == 422 and "P-256" in response.json()["detail"]


def test_configuration_repr_hides_credentials() -> None:
    data = SendGridIn(verification_key="MFkw" + "A" * 80, label="x")
    assert "MFkw" not in repr(data) and "MFkw" not in str(data)


async def test_delete_destroys_credentials_and_the_url_stops_working(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection
) -> None:
    made = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": SECRETS["mailgun"]})
    deleted = await pclient.delete(f"/v1/providers/{made['id']}", headers=tenant.auth("admin"))
    assert deleted.status_code == 200 and deleted.json()["deleted_at"] is not None
    again = await pclient.delete(f"/v1/providers/{made['id']}", headers=tenant.auth("admin"))
    assert again.status_code == 200 and again.json()["deleted_at"] == deleted.json()["deleted_at"]
    assert await db.fetchval("SELECT secret_box FROM providers WHERE id = $1", made["id"]) is None
    body = mailgun_body(SECRETS["mailgun"], {"event": "complained", "id": "x", "recipient": "a@example.no"})
    refused(await pclient.post(inbound_path(made), content=body), 404, "not_found")
    assert (await pclient.delete("/v1/providers/999999999", headers=tenant.auth("admin"))).status_code == 404
    listed = (await pclient.get("/v1/providers", headers=tenant.auth("read"))).json()
    assert [p["deleted_at"] for p in listed] == [deleted.json()["deleted_at"]]


async def test_another_tenants_configuration_is_not_found(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, queries: Queries
) -> None:
    from suppress.tenants import create_tenant

    made = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": SECRETS["mailgun"]})
    stranger = await create_tenant(db, queries, f"stranger-{secrets.token_hex(4)}")
    headers = {"Authorization": f"Bearer {stranger.api_key}"}
    assert (await pclient.delete(f"/v1/providers/{made['id']}", headers=headers)).status_code == 404
    assert (await pclient.get(f"/v1/providers/{made['id']}/events", headers=headers)).status_code == 404
    assert await db.fetchval("SELECT deleted_at FROM providers WHERE id = $1", made["id"]) is None


async def test_unknown_kind_or_id_or_wrong_kind_is_404(pclient: Client, tenant: Tenant) -> None:
    made = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": SECRETS["mailgun"]})
    for path in (
        f"/v1/providers/sveve/{made['id']}",
        f"/v1/providers/postmark/{made['id']}",
        "/v1/providers/mailgun/987654321",
    ):
        refused(await pclient.post(path, content=b"{}"), 404, "not_found")
    # GET is only for the SMS providers
    refused(await pclient.get(inbound_path(made)), 404, "not_found")


# -- Amazon SES via SNS --------------------------------------------------------------------------------


async def ses_provider(client: Client, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    return await configure(client, tenant, {"kind": "ses", "topic_arns": [SES_ARN], **extra})


async def test_ses_fixture_verifies_is_stored_once_and_becomes_a_hard_bounce(
    pclient: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    clock: Clock,
    fetcher: FakeFetcher,
    wctx: dict[str, Any],
) -> None:
    case = fixture("ses_sns_bounce.json")
    provider = await ses_provider(pclient, tenant)
    clock.at = datetime(2026, 3, 2, 10, 15, 40, tzinfo=UTC)
    body = json.dumps(case["body"]).encode()
    response = await pclient.post(inbound_path(provider), content=body, headers=case["headers"])
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1, "stored": 1, "duplicates": 0}
    # redelivered (SNS keeps the MessageId): acknowledged, nothing new stored
    again = await pclient.post(inbound_path(provider), content=body, headers=case["headers"])
    assert again.json() == {"received": 1, "stored": 0, "duplicates": 1}
    assert fetcher.fetched == [FIXTURE_CERT_URL]  # fetched once, then cached
    [event] = await events_of(db, tenant)
    assert event["event_key"] == case["body"]["MessageId"] and event["status"] == "pending"
    assert await decision(pclient, tenant, "ola.nordmann@example.no", purpose="transactional") == (
        True,
        "transactional",
        None,
    )
    assert await apply_pending(wctx, db, tenant) == {"processed": 1}
    assert await decision(pclient, tenant, "ola.nordmann@example.no", purpose="transactional") == (
        False,
        None,
        "hard_bounced",
    )
    [written] = await ledger(db, tenant)
    assert written["kind"] == "suppression_added" and written["source"] == "provider:ses"
    assert written["campaign"] == "spring-2026"
    assert written["actor"] == f"provider:ses:{provider['id']}"
    assert written["occurred_at"] == datetime(2026, 3, 2, 10, 15, 31, 123000, tzinfo=UTC)
    assert written["data"]["provider"] == "ses"
    assert written["data"]["provider_event_id"] == case["body"]["MessageId"]
    assert written["data"]["message_id"] == "0100018e0f0f0e0e-11111111-2222-3333-4444-555555555555-000000"
    assert written["data"]["reason"] == "hard_bounced" and written["data"]["bounce_subtype"] == "NoEmail"
    # applied: the payload (the provider's copy of the address) is dropped, the key kept for de-duplication
    assert await db.fetchval("SELECT payload::text FROM provider_events WHERE id = $1", event["id"]) == "{}"
    assert (await pclient.post(inbound_path(provider), content=body, headers=case["headers"])).json()[
        "stored"
    ] == 0
    # a second run changes nothing
    assert await apply_pending(wctx, db, tenant) == {}
    assert len(await ledger(db, tenant)) == 1


def _tamper(body: bytes) -> bytes:
    document = json.loads(body)
    document["Message"] = document["Message"].replace("kari@example.no", "kari@example.com")
    return json.dumps(document).encode()


def _with(body: bytes, **fields: Any) -> bytes:
    return json.dumps({**json.loads(body), **fields}).encode()


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("altered message", "provider_signature_invalid"),
        ("wrong topic", "provider_signature_invalid"),
        ("http certificate", "provider_signature_invalid"),
        ("foreign certificate host", "provider_signature_invalid"),
        ("lookalike certificate host", "provider_signature_invalid"),
        ("certificate on a port", "provider_signature_invalid"),
        ("certificate in another region", "provider_signature_invalid"),
        ("certificate not a .pem", "provider_signature_invalid"),
        ("certificate with credentials", "provider_signature_invalid"),
        ("unknown signature version", "provider_signature_invalid"),
        ("stale", "provider_timestamp_stale"),
        ("from the future", "provider_timestamp_stale"),
        ("wrong key", "provider_signature_invalid"),
        ("raw delivery", "provider_signature_invalid"),
        ("header disagrees", "provider_signature_invalid"),
    ],
)
async def test_ses_refusals_store_nothing(
    pclient: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    sns: SnsSigner,
    fetcher: FakeFetcher,
    change: str,
    code: str,
) -> None:
    provider = await ses_provider(pclient, tenant)
    other_arn = "arn:aws:sns:eu-north-1:999999999999:someone-elses-topic"
    message = sns_notification(ses_bounce("kari@example.no"))
    headers = {"Content-Type": "text/plain; charset=UTF-8"}
    cert = sns.cert_url
    body = sns.sign(message)
    if change == "altered message":
        body = _tamper(body)
    elif change == "wrong topic":  # validly signed by SNS, but for a topic this tenant did not allow
        body = sns.sign({**message, "TopicArn": other_arn})
    elif change == "http certificate":
        body = sns.sign({**message, "SigningCertURL": cert.replace("https://", "http://")})
    elif change == "foreign certificate host":
        body = sns.sign(
            {**message, "SigningCertURL": "https://s3.amazonaws.com/bucket/SimpleNotificationService-x.pem"}
        )
    elif change == "lookalike certificate host":
        url = "https://sns.eu-north-1.amazonaws.com.evil.example/SimpleNotificationService-x.pem"
        body = sns.sign({**message, "SigningCertURL": url})
    elif change == "certificate on a port":
        body = sns.sign({**message, "SigningCertURL": cert.replace(".com/", ".com:8443/")})
    elif change == "certificate in another region":
        body = sns.sign({**message, "SigningCertURL": cert.replace("eu-north-1", "us-east-1")})
    elif change == "certificate not a .pem":
        body = sns.sign({**message, "SigningCertURL": cert.replace(".pem", ".txt")})
    elif change == "certificate with credentials":
        body = sns.sign({**message, "SigningCertURL": cert.replace("https://", "https://user@")})
    elif change == "unknown signature version":
        body = _with(sns.sign(message), SignatureVersion="3")
    elif change == "stale":
        body = sns.sign({**message, "Timestamp": "2026-01-01T00:00:00.000Z"})
    elif change == "from the future":
        later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        body = sns.sign({**message, "Timestamp": later})
    elif change == "wrong key":
        body = sns.sign(message, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif change == "raw delivery":
        headers["x-amz-sns-rawdelivery"] = "true"
    elif change == "header disagrees":
        headers["x-amz-sns-message-id"] = "something-else"
    response = await pclient.post(inbound_path(provider), content=body, headers=headers)
    refused(response, 403, code)
    assert await events_of(db, tenant) == []
    if "certificate" in change or change in ("wrong topic", "stale", "raw delivery"):
        assert fetcher.fetched == []  # refused before anything was fetched


async def test_ses_signature_versions_one_and_two_and_the_configured_choice(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, sns: SnsSigner
) -> None:
    both = await ses_provider(pclient, tenant)
    only_two = await ses_provider(pclient, tenant, signature_versions=["2"])
    v1 = sns.sign(
        {**sns_notification(ses_bounce("v1@example.no")), "Subject": "Amazon SES\nbounce"}, version="1"
    )
    v2 = sns.sign(sns_notification(ses_bounce("v2@example.no")), version="2")
    assert (await pclient.post(inbound_path(both), content=v1)).json()["stored"] == 1
    assert (await pclient.post(inbound_path(both), content=v2)).json()["stored"] == 1
    refused(await pclient.post(inbound_path(only_two), content=v1), 403, "provider_signature_invalid")
    assert (await pclient.post(inbound_path(only_two), content=v2)).json()["stored"] == 1
    # a v1 signature presented as v2 (or the other way round) does not verify
    refused(
        await pclient.post(inbound_path(both), content=_with(v1, SignatureVersion="2")),
        403,
        "provider_signature_invalid",
    )
    assert len(await events_of(db, tenant)) == 3


async def test_ses_certificate_that_cannot_be_fetched_or_read(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, sns: SnsSigner, fetcher: FakeFetcher
) -> None:
    provider = await ses_provider(pclient, tenant)
    missing = "https://sns.eu-north-1.amazonaws.com/SimpleNotificationService-missing.pem"
    garbage = "https://sns.eu-north-1.amazonaws.com/SimpleNotificationService-garbage.pem"
    fetcher.documents[garbage] = b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
    for url in (missing, garbage):
        body = sns.sign({**sns_notification(ses_bounce("x@example.no")), "SigningCertURL": url})
        refused(await pclient.post(inbound_path(provider), content=body), 403, "provider_signature_invalid")
    assert await events_of(db, tenant) == []


async def test_ses_subscription_confirmation_is_confirmed_by_the_worker(
    pclient: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    sns: SnsSigner,
    fetcher: FakeFetcher,
    wctx: dict[str, Any],
) -> None:
    provider = await ses_provider(pclient, tenant)
    token = secrets.token_hex(32)
    subscribe = (
        f"https://sns.eu-north-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={SES_ARN}&Token={token}"
    )
    fetcher.documents[subscribe] = b"<ConfirmSubscriptionResponse/>"
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": secrets.token_hex(16),
        "Token": token,
        "TopicArn": SES_ARN,
        "Message": "You have chosen to subscribe to the topic.\nTo confirm, visit the SubscribeURL.",
        "SubscribeURL": subscribe,
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    # a SubscribeURL elsewhere is refused at the door
    for url in (
        subscribe.replace("sns.eu-north-1.amazonaws.com", "attacker.example"),
        subscribe.replace("https://", "http://"),
        subscribe.replace(SES_ARN, SES_ARN + "-other"),
    ):
        refused(
            await pclient.post(
                inbound_path(provider), content=sns.sign({**confirmation, "SubscribeURL": url})
            ),
            403,
            "provider_signature_invalid",
        )
    assert await events_of(db, tenant) == []
    response = await pclient.post(
        inbound_path(provider),
        content=sns.sign(confirmation),
        headers={"x-amz-sns-message-type": "SubscriptionConfirmation"},
    )
    assert response.status_code == 200 and response.json()["stored"] == 1
    fetcher.fetched.clear()
    assert await apply_pending(wctx, db, tenant) == {"processed": 1}
    assert fetcher.fetched == [subscribe]
    [event] = await events_of(db, tenant)
    assert json.loads(event["outcome"]) == [{"action": "confirm_subscription", "result": "confirmed"}]
    assert await ledger(db, tenant) == []


async def test_ses_validation_notice_and_unknown_events_are_acknowledged_and_ignored(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, sns: SnsSigner, wctx: dict[str, Any]
) -> None:
    provider = await ses_provider(pclient, tenant)
    notice = sns_notification("Successfully validated SNS topic for Amazon SES event publishing.")
    delivery = sns_notification({"eventType": "Delivery", "mail": {"destination": ["a@example.no"]}})
    for message in (notice, delivery):
        assert (await pclient.post(inbound_path(provider), content=sns.sign(message))).status_code == 200
    assert await apply_pending(wctx, db, tenant) == {"processed": 2}
    assert await ledger(db, tenant) == []


# -- SendGrid ----------------------------------------------------------------------------------------------


async def test_sendgrid_fixture_verifies_and_maps_each_event(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, clock: Clock, wctx: dict[str, Any]
) -> None:
    case = fixture("sendgrid_signed_events.json")
    await topic(pclient, tenant, "newsletter", False)
    await topic(pclient, tenant, "offers", False)
    await consent(pclient, tenant, "per@example.no")
    provider = await configure(
        pclient,
        tenant,
        {
            "kind": "sendgrid",
            "verification_key": case["verification_key_as_shown_by_sendgrid"],
            "topics": {"1234": "newsletter"},
        },
    )
    clock.unix(case["headers"]["X-Twilio-Email-Event-Webhook-Timestamp"], plus=5)
    body = case["raw_body"].encode()
    response = await pclient.post(inbound_path(provider), content=body, headers=case["headers"])
    assert response.json() == {"received": 3, "stored": 3, "duplicates": 0}
    again = await pclient.post(inbound_path(provider), content=body, headers=case["headers"])
    assert again.json() == {"received": 3, "stored": 0, "duplicates": 3}
    assert [e["event_key"] for e in await events_of(db, tenant)] == [
        "Ym91bmNlLTEyMzQ1Njc4OTA",
        "Z3JvdXBfdW5zdWItOTg3NjU0",
        "c3BhbXJlcG9ydC0xMTExMQ",
    ]
    assert await apply_pending(wctx, db, tenant) == {"processed": 3}
    assert (await decision(pclient, tenant, "kari@example.no"))[2] == "hard_bounced"
    assert await decision(pclient, tenant, "per@example.no", topic="newsletter") == (
        False,
        None,
        "unsubscribed",
    )
    assert await decision(pclient, tenant, "per@example.no", topic="offers") == (True, "consent", None)
    assert (await decision(pclient, tenant, "nils@example.no"))[2] == "complained"
    written = await ledger(db, tenant)
    unsubscribed = next(e for e in written if e["kind"] == "unsubscribed")
    assert unsubscribed["topic"] == "newsletter" and unsubscribed["data"]["asm_group_id"] == "1234"
    assert unsubscribed["data"]["message_id"] == "def456UVW.filterdrecv-5b9d7c8f9-abcde-1-65E2F1A4-2.0"
    assert unsubscribed["data"]["provider_event_id"] == "Z3JvdXBfdW5zdWItOTg3NjU0"


@pytest.mark.parametrize(
    "change", ["altered body", "no trailing CRLF", "wrong key", "stale", "future", "missing"]
)
async def test_sendgrid_refusals_store_nothing(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, clock: Clock, change: str
) -> None:
    case = fixture("sendgrid_signed_events.json")
    key = case["verification_key_as_shown_by_sendgrid"]
    if change == "wrong key":
        key = SendGridSigner().verification_key
    provider = await configure(pclient, tenant, {"kind": "sendgrid", "verification_key": key})
    timestamp = int(case["headers"]["X-Twilio-Email-Event-Webhook-Timestamp"])
    clock.unix(timestamp, plus=60)
    body = case["raw_body"].encode()
    headers = dict(case["headers"])
    expected = (403, "provider_signature_invalid")
    if change == "altered body":
        body = body.replace(b"kari@example.no", b"kari@example.com")
    elif change == "no trailing CRLF":
        body = body.rstrip(b"\r\n")
    elif change == "stale":
        clock.unix(timestamp, plus=86_400 + 60)
        expected = (403, "provider_timestamp_stale")
    elif change == "future":
        clock.unix(timestamp, plus=-3600)
        expected = (403, "provider_timestamp_stale")
    elif change == "missing":
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
        expected = (401, "provider_credentials_missing")
    refused(await pclient.post(inbound_path(provider), content=body, headers=headers), *expected)
    assert await events_of(db, tenant) == []


async def test_sendgrid_signed_here_with_campaign_and_configured_age(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    signer = SendGridSigner()
    provider = await configure(
        pclient,
        tenant,
        {"kind": "sendgrid", "verification_key": signer.verification_key, "max_age_seconds": 600},
    )
    events = [
        {
            "email": "blocked@example.no",
            "event": "bounce",
            "type": "blocked",
            "sg_event_id": "e1",
            "sg_message_id": "m1",
            "timestamp": int(datetime.now(UTC).timestamp()),
            "campaign": "autumn",
        },
        {"email": "spam@example.no", "event": "spamreport", "sg_event_id": "e2", "campaign": "autumn"},
        {"email": "x@example.no", "event": "open", "sg_event_id": "e3"},
    ]
    body = json.dumps(events).encode()
    old = int(datetime.now(UTC).timestamp()) - 700
    refused(
        await pclient.post(inbound_path(provider), content=body, headers=signer.headers(body, old)),
        403,
        "provider_timestamp_stale",
    )
    response = await pclient.post(inbound_path(provider), content=body, headers=signer.headers(body))
    assert response.json()["stored"] == 3
    await apply_pending(wctx, db, tenant)
    assert await decision(pclient, tenant, "blocked@example.no") == (False, None, "no_basis")  # counted only
    assert (await decision(pclient, tenant, "spam@example.no"))[2] == "complained"
    [complaint] = [e for e in await ledger(db, tenant) if e["data"]["reason"] == "complained"]
    assert complaint["campaign"] == "autumn"


# -- Mailgun ---------------------------------------------------------------------------------------------


async def test_mailgun_fixture_verifies_and_becomes_a_hard_bounce(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, clock: Clock, wctx: dict[str, Any]
) -> None:
    case = fixture("mailgun_failed_permanent.json")
    provider = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": case["signing_key"]})
    clock.unix(case["body"]["signature"]["timestamp"], plus=3)
    response = await pclient.post(
        inbound_path(provider), content=json.dumps(case["body"]).encode(), headers=case["headers"]
    )
    assert response.json() == {"received": 1, "stored": 1, "duplicates": 0}
    assert await apply_pending(wctx, db, tenant) == {"processed": 1}
    assert await decision(pclient, tenant, "kari@example.no", purpose="transactional") == (
        False,
        None,
        "hard_bounced",
    )
    [written] = await ledger(db, tenant)
    assert written["data"]["message_id"] == "20260302101529.1.ABCDEF0123456789@mg.example.com"
    assert written["data"]["provider_event_id"] == "G9Bn5sl1TC6nu79C8C0bwg:1772446530.812345"


async def test_mailgun_replayed_token_is_refused_even_with_another_body(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, clock: Clock
) -> None:
    case = fixture("mailgun_failed_permanent.json")
    provider = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": case["signing_key"]})
    clock.unix(case["body"]["signature"]["timestamp"], plus=3)
    first = json.dumps(case["body"]).encode()
    assert (await pclient.post(inbound_path(provider), content=first)).status_code == 200
    # the signature covers only timestamp + token: with the token used once, a forged body is harmless
    forged = json.loads(first)
    forged["event-data"] = {**forged["event-data"], "id": "forged", "recipient": "victim@example.no"}
    for body in (json.dumps(forged).encode(), first):
        refused(await pclient.post(inbound_path(provider), content=body), 403, "provider_replay")
    assert len(await events_of(db, tenant)) == 1


@pytest.mark.parametrize("change", ["wrong key", "altered signature", "stale", "future", "no signature"])
async def test_mailgun_refusals_store_nothing(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, clock: Clock, change: str
) -> None:
    case = fixture("mailgun_failed_permanent.json")
    key = "another-signing-key-000000000" if change == "wrong key" else case["signing_key"]
    provider = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": key})
    timestamp = int(case["body"]["signature"]["timestamp"])
    clock.unix(timestamp, plus=3)
    document = json.loads(json.dumps(case["body"]))
    expected = (403, "provider_signature_invalid")
    if change == "altered signature":
        document["signature"]["signature"] = "0" * 64
    elif change == "stale":
        clock.unix(timestamp, plus=301)
        expected = (403, "provider_timestamp_stale")
    elif change == "future":
        clock.unix(timestamp, plus=-400)
        expected = (403, "provider_timestamp_stale")
    elif change == "no signature":
        del document["signature"]
        expected = (401, "provider_credentials_missing")
    refused(await pclient.post(inbound_path(provider), content=json.dumps(document).encode()), *expected)
    assert await events_of(db, tenant) == []
    assert (
        await db.fetchval("SELECT count(*) FROM provider_nonces WHERE provider_id = $1", provider["id"]) == 0
    )


async def test_mailgun_redelivery_with_a_fresh_token_is_a_no_op(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection
) -> None:
    key = SECRETS["mailgun"]
    provider = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": key})
    event = {"event": "complained", "id": "evt-1", "timestamp": 1772446530.5, "recipient": "c@example.no"}
    assert (await pclient.post(inbound_path(provider), content=mailgun_body(key, event))).json()[
        "stored"
    ] == 1
    again = await pclient.post(inbound_path(provider), content=mailgun_body(key, event))
    assert again.json() == {"received": 1, "stored": 0, "duplicates": 1}
    assert len(await events_of(db, tenant)) == 1


# -- Postmark ----------------------------------------------------------------------------------------------


async def test_postmark_basic_auth(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    password = SECRETS["postmark"]
    provider = await configure(pclient, tenant, {"kind": "postmark", "username": "pm", "password": password})
    body = json.dumps(POSTMARK_BOUNCE).encode()
    missing = await pclient.post(inbound_path(provider), content=body)
    refused(missing, 401, "provider_credentials_missing")
    assert missing.headers["www-authenticate"].startswith("Basic ")
    for header in (basic("pm", password + "x"), basic("pmx", password), "Bearer " + password, "Basic !!!"):
        refused(
            await pclient.post(inbound_path(provider), content=body, headers={"Authorization": header}),
            403,
            "provider_signature_invalid",
        )
    assert await events_of(db, tenant) == []
    ok = await pclient.post(
        inbound_path(provider), content=body, headers={"Authorization": basic("pm", password)}
    )
    assert ok.json()["stored"] == 1
    again = await pclient.post(
        inbound_path(provider), content=body, headers={"Authorization": basic("pm", password)}
    )
    assert again.json()["duplicates"] == 1
    await apply_pending(wctx, db, tenant)
    assert (await decision(pclient, tenant, "kari@example.no"))[2] == "hard_bounced"
    [written] = await ledger(db, tenant)
    assert (
        written["campaign"] == "spring-2026" and written["data"]["provider_event_id"] == "Bounce:4323372036"
    )
    assert written["occurred_at"] == datetime(2026, 3, 2, 10, 15, 31, 412345, tzinfo=UTC)


async def test_postmark_header_secret_and_both(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection
) -> None:
    secret = "hs-" + secrets.token_hex(20)
    only_header = await configure(
        pclient, tenant, {"kind": "postmark", "header_name": "X-Suppress-Secret", "header_secret": secret}
    )
    both = await configure(
        pclient,
        tenant,
        {"kind": "postmark", "username": "pm", "password": SECRETS["postmark"], "header_secret": secret},
    )
    assert both["settings"]["header_name"] == "X-Webhook-Secret"
    body = json.dumps(POSTMARK_BOUNCE).encode()
    refused(await pclient.post(inbound_path(only_header), content=body), 401, "provider_credentials_missing")
    refused(
        await pclient.post(
            inbound_path(only_header), content=body, headers={"X-Suppress-Secret": secret[:-1]}
        ),
        403,
        "provider_signature_invalid",
    )
    ok = await pclient.post(inbound_path(only_header), content=body, headers={"X-Suppress-Secret": secret})
    assert ok.json()["stored"] == 1
    auth = {"Authorization": basic("pm", SECRETS["postmark"])}
    refused(
        await pclient.post(inbound_path(both), content=body, headers=auth),
        401,
        "provider_credentials_missing",
    )
    refused(
        await pclient.post(inbound_path(both), content=body, headers={"X-Webhook-Secret": secret}),
        401,
        "provider_credentials_missing",
    )
    ok = await pclient.post(inbound_path(both), content=body, headers={**auth, "X-Webhook-Secret": secret})
    assert ok.json()["stored"] == 1
    assert len(await events_of(db, tenant)) == 2


# -- Twilio ----------------------------------------------------------------------------------------------


def test_twilio_signature_matches_twilios_published_vectors() -> None:
    from suppress.providers.twilio import signature_of

    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ]
    assert signature_of("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ]
    assert signature_of("12345", url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


async def twilio_provider(client: Client, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    case = fixture("twilio_inbound_stop.json")
    return await configure(
        client, tenant, {"kind": "twilio", "auth_token": case["auth_token"], "url": case["url"], **extra}
    )


async def test_twilio_fixture_verifies_and_stops_sms_marketing(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    case = fixture("twilio_inbound_stop.json")
    provider = await twilio_provider(pclient, tenant)
    await consent(pclient, tenant, "+4791234567", channel="sms")
    assert await decision(pclient, tenant, "+4791234567", channel="sms") == (True, "consent", None)
    response = await pclient.post(
        inbound_path(provider), content=case["raw_body"].encode(), headers=case["headers"]
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    assert b"<Response></Response>" in response.content
    again = await pclient.post(
        inbound_path(provider), content=case["raw_body"].encode(), headers=case["headers"]
    )
    assert again.status_code == 200
    [event] = await events_of(db, tenant)
    assert event["event_key"] == "SM0123456789abcdef0123456789abcdef"
    assert await apply_pending(wctx, db, tenant) == {"processed": 1}
    assert await decision(pclient, tenant, "+4791234567", channel="sms") == (False, None, "unsubscribed")
    stop = next(e for e in await ledger(db, tenant) if e["kind"] == "unsubscribed")
    assert stop["source"] == "sms_keyword" and stop["actor"] == f"provider:twilio:{provider['id']}"
    assert (
        stop["data"]["provider"] == "twilio"
        and stop["data"]["message_id"] == "SM0123456789abcdef0123456789abcdef"
    )
    assert stop["data"]["text"] == "STOP"
    # Twilio answered STOP itself (OptOutType): no second confirmation from us
    assert not any(job.startswith("sms-reply:") for job in await queued(wctx["redis"]))


@pytest.mark.parametrize("change", ["wrong token", "altered body", "missing", "other url"])
async def test_twilio_refusals_store_nothing(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, change: str
) -> None:
    case = fixture("twilio_inbound_stop.json")
    extra: dict[str, Any] = {}
    if change == "wrong token":
        extra["auth_token"] = "fedcba9876543210fedcba9876543210"
    if change == "other url":
        extra["url"] = "https://hooks.example.com/sms/inbound/other"
    provider = await twilio_provider(pclient, tenant, **extra)
    body = case["raw_body"].encode()
    headers = dict(case["headers"])
    expected = (403, "provider_signature_invalid")
    if change == "altered body":
        body = body.replace(b"From=%2B4791234567", b"From=%2B4791234568")
    elif change == "missing":
        del headers["X-Twilio-Signature"]
        expected = (401, "provider_credentials_missing")
    refused(await pclient.post(inbound_path(provider), content=body, headers=headers), *expected)
    assert await events_of(db, tenant) == []


async def test_twilio_port_variant_get_and_default_url(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection
) -> None:
    token = SECRETS["twilio"]
    explicit = await configure(
        pclient, tenant, {"kind": "twilio", "auth_token": token, "url": "https://hooks.example.com/sms"}
    )
    default = await configure(pclient, tenant, {"kind": "twilio", "auth_token": token})
    params = [
        ("MessageSid", "SM" + secrets.token_hex(16)),
        ("From", "+4791234000"),
        ("To", "2017"),
        ("Body", "Stopp"),
    ]
    body = urlencode(params).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # Twilio sometimes signs with the default port: accepted like its SDKs do
    signed = twilio_signature(token, "https://hooks.example.com:443/sms", params)
    ok = await pclient.post(
        inbound_path(explicit), content=body, headers={**form, "X-Twilio-Signature": signed}
    )
    assert ok.status_code == 200
    # without `url`, the service's own public inbound URL is what Twilio signs
    signed = twilio_signature(token, default["inbound_url"], params)
    ok = await pclient.post(
        inbound_path(default), content=body, headers={**form, "X-Twilio-Signature": signed}
    )
    assert ok.status_code == 200
    # a GET webhook: the parameters are in the signed URL
    query = urlencode(
        [
            ("MessageSid", "SM" + secrets.token_hex(16)),
            ("From", "+4791234001"),
            ("To", "2017"),
            ("Body", "STOP"),
        ]
    )
    signed = twilio_signature(token, "https://hooks.example.com/sms?" + query, [])
    ok = await pclient.get(inbound_path(explicit) + "?" + query, headers={"X-Twilio-Signature": signed})
    assert ok.status_code == 200, ok.text
    assert len(await events_of(db, tenant)) == 3


# -- Vonage ----------------------------------------------------------------------------------------------


def test_vonage_signature_matches_the_sdk_vectors() -> None:
    from suppress.providers.vonage import signature_of

    params = {"param1": "value1", "param2": "value2", "timestamp": "1234567890"}
    sha = signature_of(params, "signature_secret", "sha256")
    assert sha == "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287"
    assert signature_of(params, "signature_secret", "md5") == "724c2bf6ca423c36e20631b11d1c5753"
    special = {"param1": "value&1", "param2": "value=2", "timestamp": "1234567890"}
    assert signature_of(special, "signature_secret", "md5") == "2bbf0abafb2c55e5af6231513896a2ac"
    checked = {"param": "value", "timestamp": "1234567890", "sig": "655a4d0b7f064dff438defc52b012cf5"}
    assert signature_of(checked, "signature_secret", "md5") == checked["sig"]


async def test_vonage_fixture_get_verifies_and_stops_sms_marketing(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, clock: Clock, wctx: dict[str, Any]
) -> None:
    case = fixture("vonage_sms_inbound_signed.json")
    provider = await configure(
        pclient, tenant, {"kind": "vonage", "signature_secret": case["signature_secret"]}
    )
    clock.unix(case["params"]["timestamp"], plus=2)
    query = urlencode(case["params"])
    response = await pclient.get(inbound_path(provider) + "?" + query)
    assert response.status_code == 200, response.text
    assert (await pclient.get(inbound_path(provider) + "?" + query)).json()["duplicates"] == 1
    await apply_pending(wctx, db, tenant)
    assert await decision(pclient, tenant, "+4791234567", channel="sms") == (False, None, "unsubscribed")
    stop = next(e for e in await ledger(db, tenant) if e["kind"] == "unsubscribed")
    assert stop["data"]["provider_event_id"] == "0A0000001234ABCD" and stop["data"]["text"] == "STOPP"
    # Vonage does not answer keywords: our Norwegian confirmation is queued
    assert any(job.startswith("sms-reply:") for job in await queued(wctx["redis"]))


@pytest.mark.parametrize("change", ["altered text", "wrong secret", "wrong method", "stale", "unsigned"])
async def test_vonage_refusals_store_nothing(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, clock: Clock, change: str
) -> None:
    case = fixture("vonage_sms_inbound_signed.json")
    body: dict[str, Any] = {"kind": "vonage", "signature_secret": case["signature_secret"]}
    if change == "wrong secret":
        body["signature_secret"] = "another-signature-secret-0000"
    if change == "wrong method":
        body["signature_method"] = "sha512"
    provider = await configure(pclient, tenant, body)
    clock.unix(case["params"]["timestamp"], plus=2)
    params = dict(case["params"])
    expected = (403, "provider_signature_invalid")
    if change == "altered text":
        params["msisdn"] = "4791234568"
    elif change == "stale":
        clock.unix(case["params"]["timestamp"], plus=86_400 + 10)
        expected = (403, "provider_timestamp_stale")
    elif change == "unsigned":
        del params["sig"]
        expected = (401, "provider_credentials_missing")
    refused(await pclient.get(inbound_path(provider) + "?" + urlencode(params)), *expected)
    assert await events_of(db, tenant) == []


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
async def test_vonage_post_form_and_json_with_each_method(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, method: str
) -> None:
    secret = SECRETS["vonage"]
    provider = await configure(
        pclient, tenant, {"kind": "vonage", "signature_secret": secret, "signature_method": method}
    )
    for encoding in ("form", "json"):
        params = {
            "msisdn": "4790000001",
            "to": "2017",
            "messageId": secrets.token_hex(8),
            "text": "a&b=c",
            "type": "text",
            "timestamp": str(int(datetime.now(UTC).timestamp())),
            "nonce": secrets.token_hex(8),
        }
        params["sig"] = vonage_sig(params, secret, method)
        if encoding == "json":
            response = await pclient.post(inbound_path(provider), json=params)
        else:
            response = await pclient.post(
                inbound_path(provider),
                content=urlencode(params).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        assert response.status_code == 200, (encoding, response.text)
    assert len(await events_of(db, tenant)) == 2


# -- the events listing ----------------------------------------------------------------------------------


async def test_events_listing_shows_state_and_outcome_without_payload(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    key = SECRETS["mailgun"]
    provider = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": key})
    for n in range(3):
        event = {
            "event": "complained",
            "id": f"e{n}",
            "timestamp": 1772446530 + n,
            "recipient": f"l{n}@example.no",
        }
        assert (
            await pclient.post(inbound_path(provider), content=mailgun_body(key, event))
        ).status_code == 200
    path = f"/v1/providers/{provider['id']}/events"
    pending = (await pclient.get(path, headers=tenant.auth("read"))).json()
    assert [e["status"] for e in pending] == ["pending"] * 3 and "payload" not in pending[0]
    await apply_pending(wctx, db, tenant)
    page = (await pclient.get(path + "?limit=2", headers=tenant.auth("read"))).json()
    assert len(page) == 2 and page[0]["status"] == "processed"
    assert page[0]["outcome"][0]["result"] == "complained"
    rest = (await pclient.get(f"{path}?before={page[-1]['id']}", headers=tenant.auth("read"))).json()
    assert len(rest) == 1 and "l0@example.no" not in json.dumps(page + rest)


async def test_vonage_start_after_stop_is_the_persons_consent_with_the_provider_evidence(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    secret = SECRETS["vonage"]
    provider = await configure(pclient, tenant, {"kind": "vonage", "signature_secret": secret})
    for n, text in enumerate(("STOPP", "Ja!")):
        params = {
            "msisdn": "4790000002",
            "to": "2017",
            "messageId": f"V{n}",
            "text": text,
            "type": "text",
            "timestamp": str(int(datetime.now(UTC).timestamp())),
        }
        params["sig"] = vonage_sig(params, secret)
        assert (await pclient.get(inbound_path(provider) + "?" + urlencode(params))).status_code == 200
        await apply_pending(wctx, db, tenant)
    assert await decision(pclient, tenant, "+4790000002", channel="sms") == (True, "consent", None)
    evidence = json.loads(
        await db.fetchval("SELECT evidence::text FROM consents WHERE tenant_id = $1", tenant.id)
    )
    assert (
        evidence["provider"] == "vonage"
        and evidence["provider_event_id"] == "V1"
        and evidence["text"] == "Ja!"
    )
