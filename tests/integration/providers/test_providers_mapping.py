"""Provider events in our vocabulary: each provider's events mapped (unit), the soft-bounce rule
with its decay, topic mapping, campaign attribution, and the worker side: claims, retries, the
sweeper that loses nothing acknowledged, pruning, and a real arq worker."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from arq import ArqRedis, Retry, create_pool
from arq.worker import Worker
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.providers import prune_provider_records, sweep_provider_events
from workers.settings import WorkerSettings, shutdown, startup

from suppress.addresses import AddressHasher
from suppress.config import DerivedKeys, Settings
from suppress.db import create_pool as create_db_pool
from suppress.effects import drain_job_id
from suppress.providers import mailgun, postmark, processing, sendgrid, ses, twilio, vonage
from suppress.providers.inbox import events_job_id
from suppress.providers.model import Change, ProviderSettings
from suppress.providers.processing import ProviderEvents
from suppress.queue import JOB_PROCESS_PROVIDER_EVENTS, enqueue, redis_settings
from suppress.sql import Queries
from tests.conftest import Tenant
from tests.integration.providers import conftest as shared
from tests.integration.providers.conftest import (
    SECRETS,
    SES_ARN,
    FakeFetcher,
    SnsSigner,
    apply_pending,
    configure,
    events_of,
    inbound_path,
    ledger,
    mailgun_body,
    queued,
    ses_bounce,
    sns_notification,
)
from tests.support import consent, decision, topic

Client = AsyncTestClient[Litestar]
SETTINGS = ProviderSettings(topics={"1234": "newsletter", "news": "newsletter", "broadcast": "newsletter"})


def one(changes: list[Change]) -> Change:
    assert len(changes) == 1, changes
    return changes[0]


# -- mapping, per provider (pure) ----------------------------------------------------------------------


def _sns(message: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "Notification", "Message": json.dumps(message)}


@pytest.mark.parametrize(
    ("message", "action", "topics"),
    [
        (ses_bounce("a@example.no", "Permanent"), "hard_bounce", ()),
        (ses_bounce("a@example.no", "Transient"), "soft_bounce", ()),
        (ses_bounce("a@example.no", "Undetermined"), "soft_bounce", ()),
        (
            {
                "notificationType": "Complaint",
                "complaint": {
                    "complainedRecipients": [{"emailAddress": "a@example.no"}],
                    "complaintFeedbackType": "abuse",
                },
                "mail": {},
            },
            "complaint",
            (),
        ),
        (
            {
                "eventType": "Complaint",
                "complaint": {
                    "complainedRecipients": [{"emailAddress": "a@example.no"}],
                    "complaintFeedbackType": "not-spam",
                },
                "mail": {},
            },
            "ignore",
            (),
        ),
        (
            {
                "eventType": "Subscription",
                "mail": {"destination": ["Kari <a@example.no>"]},
                "subscription": {"newTopicPreferences": {"unsubscribeAll": True}},
            },
            "unsubscribe",
            (),
        ),
        (
            {
                "eventType": "Subscription",
                "mail": {"destination": ["a@example.no"]},
                "subscription": {
                    "newTopicPreferences": {
                        "topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptOut"}]
                    }
                },
            },
            "unsubscribe",
            ("newsletter",),
        ),
        (
            {
                "eventType": "Subscription",
                "mail": {"destination": ["a@example.no"]},
                "subscription": {
                    "newTopicPreferences": {
                        "topicSubscriptionStatus": [{"topicName": "unmapped", "subscriptionStatus": "OptOut"}]
                    }
                },
            },
            "unsubscribe",
            (),
        ),
        (
            {
                "eventType": "Subscription",
                "mail": {"destination": ["a@example.no"]},
                "subscription": {
                    "newTopicPreferences": {
                        "topicSubscriptionStatus": [{"topicName": "news", "subscriptionStatus": "OptIn"}]
                    }
                },
            },
            "ignore",
            (),
        ),
        ({"eventType": "DeliveryDelay", "mail": {}}, "ignore", ()),
        ({"eventType": "Bounce", "bounce": "nonsense"}, "ignore", ()),
    ],
)
def test_ses_mapping(message: dict[str, Any], action: str, topics: tuple[str, ...]) -> None:
    change = one(ses.interpret(_sns(message), SETTINGS))
    assert (change.action, change.topics) == (action, topics)
    if action != "ignore":
        assert change.address == "a@example.no"


def test_ses_campaign_and_several_recipients() -> None:
    message = ses_bounce("a@example.no", campaign="spring")
    message["bounce"]["bouncedRecipients"].append({"emailAddress": "b@example.no"})
    changes = ses.interpret(_sns(message), SETTINGS)
    assert [(c.address, c.campaign) for c in changes] == [
        ("a@example.no", "spring"),
        ("b@example.no", "spring"),
    ]
    assert changes[0].message_id == message["mail"]["messageId"]


@pytest.mark.parametrize(
    ("event", "action", "topics"),
    [
        ({"event": "bounce", "type": "bounce"}, "hard_bounce", ()),
        ({"event": "bounce"}, "hard_bounce", ()),
        ({"event": "bounce", "type": "blocked"}, "soft_bounce", ()),
        ({"event": "deferred"}, "ignore", ()),
        ({"event": "dropped", "reason": "Bounced Address"}, "hard_bounce", ()),
        ({"event": "dropped", "reason": "Spam Reporting Address"}, "complaint", ()),
        (
            {"event": "dropped", "reason": "Unsubscribed Address", "asm_group_id": 1234},
            "unsubscribe",
            ("newsletter",),
        ),
        ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, "ignore", ()),
        ({"event": "spamreport"}, "complaint", ()),
        ({"event": "unsubscribe"}, "unsubscribe", ()),
        ({"event": "group_unsubscribe", "asm_group_id": 1234}, "unsubscribe", ("newsletter",)),
        ({"event": "group_unsubscribe", "asm_group_id": 999}, "unsubscribe", ()),
        ({"event": "group_resubscribe", "asm_group_id": 1234}, "ignore", ()),
        ({"event": "delivered"}, "ignore", ()),
    ],
)
def test_sendgrid_mapping(event: dict[str, Any], action: str, topics: tuple[str, ...]) -> None:
    change = one(sendgrid.interpret({"email": "a@example.no", "sg_message_id": "m1", **event}, SETTINGS))
    assert (change.action, change.topics) == (action, topics)


def test_sendgrid_campaign_from_custom_arg_then_marketing_campaign() -> None:
    base = {"email": "a@example.no", "event": "spamreport"}
    assert one(sendgrid.interpret({**base, "campaign": "c1"}, SETTINGS)).campaign == "c1"
    assert one(sendgrid.interpret({**base, "marketing_campaign_name": "mc"}, SETTINGS)).campaign == "mc"
    custom = msgspec.structs.replace(SETTINGS, campaign_key="utm_campaign")
    assert one(sendgrid.interpret({**base, "utm_campaign": "u"}, custom)).campaign == "u"


@pytest.mark.parametrize(
    ("event", "action", "topics"),
    [
        ({"event": "failed", "severity": "permanent", "delivery-status": {"code": 550}}, "hard_bounce", ()),
        ({"event": "failed", "severity": "permanent", "delivery-status": {"code": 421}}, "soft_bounce", ()),
        ({"event": "failed", "severity": "temporary", "delivery-status": {"code": 452}}, "soft_bounce", ()),
        ({"event": "failed", "severity": "permanent", "reason": "suppress-complaint"}, "complaint", ()),
        (
            {"event": "failed", "severity": "permanent", "reason": "suppress-unsubscribe", "tags": ["news"]},
            "unsubscribe",
            ("newsletter",),
        ),
        ({"event": "complained"}, "complaint", ()),
        ({"event": "unsubscribed", "tags": ["other", "news"]}, "unsubscribe", ("newsletter",)),
        ({"event": "unsubscribed", "tags": ["other"]}, "unsubscribe", ()),
        ({"event": "delivered"}, "ignore", ()),
    ],
)
def test_mailgun_mapping(event: dict[str, Any], action: str, topics: tuple[str, ...]) -> None:
    payload = {"event-data": {"recipient": "a@example.no", "user-variables": {"campaign": "c"}, **event}}
    change = one(mailgun.interpret(payload, SETTINGS))
    assert (change.action, change.topics) == (action, topics)
    if action != "ignore":
        assert change.campaign == "c"


@pytest.mark.parametrize(
    ("event", "action", "topics"),
    [
        ({"RecordType": "Bounce", "Type": "HardBounce", "Email": "a@example.no"}, "hard_bounce", ()),
        ({"RecordType": "Bounce", "Type": "BadEmailAddress", "Email": "a@example.no"}, "hard_bounce", ()),
        ({"RecordType": "Bounce", "Type": "SoftBounce", "Email": "a@example.no"}, "soft_bounce", ()),
        ({"RecordType": "Bounce", "Type": "Transient", "Email": "a@example.no"}, "ignore", ()),
        ({"RecordType": "Bounce", "Type": "AutoResponder", "Email": "a@example.no"}, "ignore", ()),
        ({"RecordType": "SpamComplaint", "Type": "SpamComplaint", "Email": "a@example.no"}, "complaint", ()),
        (
            {
                "RecordType": "SubscriptionChange",
                "Recipient": "a@example.no",
                "SuppressSending": True,
                "SuppressionReason": "ManualSuppression",
                "Origin": "Recipient",
                "MessageStream": "broadcast",
            },
            "unsubscribe",
            ("newsletter",),
        ),
        (
            {
                "RecordType": "SubscriptionChange",
                "Recipient": "a@example.no",
                "SuppressSending": True,
                "SuppressionReason": "ManualSuppression",
                "Origin": "Customer",
            },
            "manual",
            (),
        ),
        (
            {
                "RecordType": "SubscriptionChange",
                "Recipient": "a@example.no",
                "SuppressSending": True,
                "SuppressionReason": "HardBounce",
            },
            "hard_bounce",
            (),
        ),
        (
            {
                "RecordType": "SubscriptionChange",
                "Recipient": "a@example.no",
                "SuppressSending": True,
                "SuppressionReason": "SpamComplaint",
            },
            "complaint",
            (),
        ),
        (
            {
                "RecordType": "SubscriptionChange",
                "Recipient": "a@example.no",
                "SuppressSending": False,
                "SuppressionReason": None,
            },
            "ignore",
            (),
        ),
        ({"RecordType": "Open"}, "ignore", ()),
    ],
)
def test_postmark_mapping(event: dict[str, Any], action: str, topics: tuple[str, ...]) -> None:
    change = one(postmark.interpret(event, SETTINGS))
    assert (change.action, change.topics) == (action, topics)


def test_sms_mapping_and_replies() -> None:
    stop = {"From": "+4791234567", "To": "+4759440000", "Body": "STOP", "MessageSid": "SM1"}
    auto = ProviderSettings(replies="auto")
    assert one(twilio.interpret(stop, auto)).reply is False  # Twilio answers its own keywords
    assert one(twilio.interpret({**stop, "Body": "Stopp"}, auto)).reply is True
    assert one(twilio.interpret({**stop, "Body": "Stopp"}, ProviderSettings(replies="never"))).reply is False
    custom = one(twilio.interpret({**stop, "Body": "Slutt med dette", "OptOutType": "STOP"}, auto))
    assert (custom.text, custom.reply) == ("STOP", False)
    vonage_sms = one(
        vonage.interpret(
            {"msisdn": "4791234567", "to": "2017", "text": "Stopp", "messageId": "x"},
            ProviderSettings(replies="always"),
        )
    )
    assert (vonage_sms.action, vonage_sms.address, vonage_sms.reply) == ("sms", "+4791234567", True)
    assert one(vonage.interpret({"msisdn": "47", "to": "1", "type": "binary"}, SETTINGS)).action == "ignore"
    assert one(twilio.interpret({"Body": "STOP"}, SETTINGS)).action == "ignore"


# -- soft bounces: N within the window, decaying -----------------------------------------------------


async def soft_bounce(
    client: Client,
    provider: dict[str, Any],
    sns: SnsSigner,
    address: str,
    *,
    message_id: str | None = None,
    at: datetime | None = None,
) -> None:
    message = ses_bounce(address, "Transient", message_id=message_id)
    if at is not None:
        message["bounce"]["timestamp"] = at.isoformat()
    response = await client.post(inbound_path(provider), content=sns.sign(sns_notification(message)))
    assert response.status_code == 200, response.text


async def test_soft_bounces_processed_at_once_by_several_workers_are_counted_exactly(
    pclient: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    sns: SnsSigner,
    settings: Settings,
    queries: Queries,
) -> None:
    """Three bounces of one recipient processed at the same moment each used to count only what its
    own snapshot saw, so some recipients with three bounces in the window were never suppressed."""
    provider = await configure(pclient, tenant, {"kind": "ses", "topic_arns": [SES_ARN]})
    people = [f"race{i}@example.no" for i in range(20)]
    for address in people:
        await consent(pclient, tenant, address)
        for n in range(3):
            await soft_bounce(pclient, provider, sns, address, message_id=f"{address}-{n}")
    pending = [
        r["id"] for r in await db.fetch("SELECT id FROM provider_events WHERE tenant_id = $1", tenant.id)
    ]
    pool = await create_db_pool(settings.require_database_url(), size=12)
    try:
        hasher = AddressHasher(DerivedKeys.from_settings(settings).address_hash_key)
        workers = [ProviderEvents(pool, queries, hasher, None, None) for _ in range(3)]
        # the three bounces of each recipient go to three workers at the same moment
        outcomes = await asyncio.gather(
            *(
                workers[n % 3].process(tenant.id, event_id, datetime.now(UTC))
                for n, event_id in enumerate(pending)
            )
        )
    finally:
        await pool.close()
    assert set(outcomes) == {"processed"}
    suppressed = [a for a in people if (await decision(pclient, tenant, a))[2] == "soft_bounced"]
    assert suppressed == people
    counted = await db.fetchval(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND data->>'reason' = 'soft_bounced'", tenant.id
    )
    assert counted == len(people)  # one suppression each, written by the bounce that reached three


async def test_three_soft_bounces_within_the_window_suppress_for_thirty_days(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, sns: SnsSigner, wctx: dict[str, Any]
) -> None:
    provider = await configure(pclient, tenant, {"kind": "ses", "topic_arns": [SES_ARN]})
    await consent(pclient, tenant, "soft@example.no")
    await soft_bounce(pclient, provider, sns, "soft@example.no", message_id="m1")
    await soft_bounce(pclient, provider, sns, "soft@example.no", message_id="m1")  # the same message again
    await soft_bounce(pclient, provider, sns, "soft@example.no", message_id="m2")
    await apply_pending(wctx, db, tenant)
    assert await decision(pclient, tenant, "soft@example.no") == (True, "consent", None)
    outcomes = [json.loads(e["outcome"])[0] for e in await events_of(db, tenant)]
    assert [o["result"] for o in outcomes] == ["counted", "already_counted", "counted"]
    assert [o["soft_bounces"] for o in outcomes] == [1, 1, 2]
    await soft_bounce(pclient, provider, sns, "soft@example.no", message_id="m3")
    await apply_pending(wctx, db, tenant)
    assert await decision(pclient, tenant, "soft@example.no") == (False, None, "soft_bounced")
    expires = await db.fetchval(
        "SELECT expires_at FROM suppressions WHERE tenant_id = $1 AND reason = 'soft_bounced'", tenant.id
    )
    assert timedelta(days=29, hours=23) < expires - datetime.now(UTC) <= timedelta(days=30)
    [written] = [e for e in await ledger(db, tenant) if e["data"].get("reason") == "soft_bounced"]
    assert written["data"]["soft_bounces"] == 3 and written["data"]["provider"] == "ses"
    # transactional mail still goes: only hard bounces block it by default
    assert (await decision(pclient, tenant, "soft@example.no", purpose="transactional"))[0] is True


async def test_soft_bounces_decay_outside_the_window_and_follow_tenant_settings(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, sns: SnsSigner, wctx: dict[str, Any]
) -> None:
    provider = await configure(pclient, tenant, {"kind": "ses", "topic_arns": [SES_ARN]})
    now = datetime.now(UTC)
    for days in (45, 35, 1):
        await soft_bounce(pclient, provider, sns, "decay@example.no", at=now - timedelta(days=days))
    await apply_pending(wctx, db, tenant)
    counts = [json.loads(e["outcome"])[0]["soft_bounces"] for e in await events_of(db, tenant)]
    assert counts == [1, 2, 1]  # 45 and 35 days ago are 10 days apart; yesterday stands alone
    assert (
        await db.fetchval(
            "SELECT count(*) FROM suppressions WHERE tenant_id = $1 AND reason = 'soft_bounced'", tenant.id
        )
        == 0
    )
    await db.execute(
        "UPDATE tenants SET soft_bounce_threshold = 2, soft_bounce_window_days = 7, soft_bounce_suppress_days = 3"
        " WHERE id = $1",
        tenant.id,
    )
    await soft_bounce(pclient, provider, sns, "decay@example.no", at=now)
    await apply_pending(wctx, db, tenant)
    assert (await decision(pclient, tenant, "decay@example.no"))[2] == "soft_bounced"
    expires = await db.fetchval(
        "SELECT expires_at FROM suppressions WHERE tenant_id = $1 AND reason = 'soft_bounced'", tenant.id
    )
    assert abs(expires - (now + timedelta(days=3))) < timedelta(seconds=5)


async def test_old_reports_are_counted_but_suppress_nothing_that_would_have_expired(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, sns: SnsSigner, wctx: dict[str, Any]
) -> None:
    provider = await configure(pclient, tenant, {"kind": "ses", "topic_arns": [SES_ARN]})
    long_ago = datetime.now(UTC) - timedelta(days=90)
    for hours in (0, 1, 2):
        await soft_bounce(pclient, provider, sns, "old@example.no", at=long_ago + timedelta(hours=hours))
    await apply_pending(wctx, db, tenant)
    results = [json.loads(e["outcome"])[0]["result"] for e in await events_of(db, tenant)]
    assert results == ["counted", "counted", "counted_expired"]
    assert await ledger(db, tenant) == []


# -- unsubscribes, topics and campaigns end to end ---------------------------------------------------


async def test_mailgun_unsubscribe_by_tag_topic_and_unmapped_tag_all_topics(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    await topic(pclient, tenant, "newsletter", False)
    await topic(pclient, tenant, "offers", False)
    key = SECRETS["mailgun"]
    provider = await configure(
        pclient, tenant, {"kind": "mailgun", "signing_key": key, "topics": {"nyhetsbrev": "newsletter"}}
    )
    for address, tags in (("tagged@example.no", ["nyhetsbrev"]), ("untagged@example.no", ["misc"])):
        await consent(pclient, tenant, address)
        event = {
            "event": "unsubscribed",
            "id": secrets.token_hex(6),
            "timestamp": 1772446530.1,
            "recipient": address,
            "tags": tags,
            "user-variables": {"campaign": "spring"},
            "message": {"headers": {"message-id": f"{address}.msg"}},
        }
        assert (
            await pclient.post(inbound_path(provider), content=mailgun_body(key, event))
        ).status_code == 200
    await apply_pending(wctx, db, tenant)
    assert await decision(pclient, tenant, "tagged@example.no", topic="newsletter") == (
        False,
        None,
        "unsubscribed",
    )
    assert await decision(pclient, tenant, "tagged@example.no", topic="offers") == (True, "consent", None)
    assert await decision(pclient, tenant, "untagged@example.no", topic="offers") == (
        False,
        None,
        "unsubscribed",
    )
    written = [e for e in await ledger(db, tenant) if e["kind"] == "unsubscribed"]
    assert {(e["topic"], e["campaign"]) for e in written} == {("newsletter", "spring"), (None, "spring")}
    assert all(e["data"]["message_id"].endswith(".msg") for e in written)


async def test_postmark_subscription_changes_end_to_end(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    import base64

    await topic(pclient, tenant, "newsletter", False)
    password = SECRETS["postmark"]
    provider = await configure(
        pclient,
        tenant,
        {"kind": "postmark", "username": "pm", "password": password, "topics": {"broadcast": "newsletter"}},
    )
    auth = {"Authorization": "Basic " + base64.b64encode(f"pm:{password}".encode()).decode()}
    changes = [
        ("recipient@example.no", "ManualSuppression", "Recipient"),
        ("customer@example.no", "ManualSuppression", "Customer"),
        ("complainer@example.no", "SpamComplaint", "Recipient"),
    ]
    for address, reason, origin in changes:
        body = {
            "RecordType": "SubscriptionChange",
            "MessageID": secrets.token_hex(8),
            "MessageStream": "broadcast",
            "ChangedAt": "2026-03-02T10:20:00Z",
            "Recipient": address,
            "Origin": origin,
            "SuppressSending": True,
            "SuppressionReason": reason,
            "Metadata": {"campaign": "c"},
        }
        response = await pclient.post(inbound_path(provider), content=json.dumps(body).encode(), headers=auth)
        assert response.status_code == 200
    await apply_pending(wctx, db, tenant)
    assert (await decision(pclient, tenant, "recipient@example.no", topic="newsletter"))[2] == "unsubscribed"
    assert (await decision(pclient, tenant, "customer@example.no"))[2] == "manual"
    assert (await decision(pclient, tenant, "complainer@example.no"))[2] == "complained"


async def test_an_address_that_does_not_normalise_is_recorded_not_retried(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    key = SECRETS["mailgun"]
    provider = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": key})
    event = {"event": "complained", "id": "bad", "timestamp": 1772446530.1, "recipient": "not an address"}
    await pclient.post(inbound_path(provider), content=mailgun_body(key, event))
    assert await apply_pending(wctx, db, tenant) == {"processed": 1}
    [stored] = await events_of(db, tenant)
    assert json.loads(stored["outcome"]) == [{"action": "complaint", "result": "invalid_address"}]


async def test_provider_writes_have_effects_queued(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    key = SECRETS["mailgun"]
    provider = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": key})
    event = {"event": "complained", "id": "fx", "timestamp": 1772446530.1, "recipient": "fx@example.no"}
    await pclient.post(inbound_path(provider), content=mailgun_body(key, event))
    await apply_pending(wctx, db, tenant)
    assert len(await db.fetch("SELECT id FROM events WHERE tenant_id = $1", tenant.id)) == 1
    assert drain_job_id(tenant.id) in await queued(wctx["redis"])


# -- the worker: claims, failures, outages, the sweeper, pruning ----------------------------------------


async def _one_pending(pclient: Client, tenant: Tenant, address: str = "w@example.no") -> dict[str, Any]:
    key = SECRETS["mailgun"]
    provider = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": key})
    event = {
        "event": "complained",
        "id": secrets.token_hex(4),
        "timestamp": 1772446530.1,
        "recipient": address,
    }
    assert (await pclient.post(inbound_path(provider), content=mailgun_body(key, event))).status_code == 200
    return provider


async def drain(redis: ArqRedis) -> None:
    """Empty a test queue, job records included (a job id stays taken while its record exists)."""
    for job_id in await queued(redis):
        await redis.delete(f"arq:job:{job_id}")
    await redis.delete(redis.default_queue_name)


async def forget_request_jobs(redis: ArqRedis, tenant: Tenant) -> None:
    """Lose the jobs the inbound requests of `tenant` enqueued (in arq's default queue)."""
    prefix = f"provider-events:{tenant.id}:"
    for raw in await redis.zrange("arq:queue", 0, -1):
        if raw.decode().startswith(prefix):
            await redis.zrem("arq:queue", raw)
            await redis.delete(f"arq:job:{raw.decode()}")


def _events(wctx: dict[str, Any]) -> ProviderEvents:
    from workers.providers import _events as build

    return build(wctx)


async def test_an_event_is_applied_once_even_when_two_workers_race(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    await _one_pending(pclient, tenant)
    [event] = await events_of(db, tenant)
    events = _events(wctx)
    now = datetime.now(UTC)
    results = await asyncio.gather(*(events.process(tenant.id, event["id"], now) for _ in range(4)))
    assert sorted(results) == ["processed", "skipped", "skipped", "skipped"]
    assert len(await ledger(db, tenant)) == 1
    assert await events.process(tenant.id, event["id"], now) == "skipped"


async def test_errors_retry_then_fail_for_a_person_to_see(
    pclient: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    wctx: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = await _one_pending(pclient, tenant)
    [event] = await events_of(db, tenant)

    def broken(payload: dict[str, Any], settings: ProviderSettings) -> list[Change]:
        raise KeyError("surprise")

    monkeypatch.setitem(processing.INTERPRETERS, "mailgun", broken)
    events = _events(wctx)
    for _ in range(processing.MAX_ATTEMPTS - 1):
        assert await events.process(tenant.id, event["id"], datetime.now(UTC)) == "retry"
    row = await db.fetchrow("SELECT status, attempts, error FROM provider_events WHERE id = $1", event["id"])
    assert (row["status"], row["attempts"]) == ("pending", processing.MAX_ATTEMPTS - 1)
    assert "surprise" in row["error"]
    assert await events.process(tenant.id, event["id"], datetime.now(UTC)) == "failed"
    listed = await pclient.get(
        f"/v1/providers/{provider['id']}/events?status=failed", headers=tenant.auth("read")
    )
    assert [e["status"] for e in listed.json()] == ["failed"]


async def test_an_outage_retries_the_job_and_gives_the_event_back(
    pclient: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    wctx: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.providers import process_provider_events

    await _one_pending(pclient, tenant)
    [event] = await events_of(db, tenant)

    def down(payload: dict[str, Any], settings: ProviderSettings) -> list[Change]:
        raise ConnectionRefusedError("database went away")

    monkeypatch.setitem(processing.INTERPRETERS, "mailgun", down)
    with pytest.raises(Retry):
        await process_provider_events({**wctx, "job_try": 2}, tenant.id, [event["id"]])
    row = await db.fetchrow("SELECT status, claimed_until FROM provider_events WHERE id = $1", event["id"])
    assert row["status"] == "pending" and row["claimed_until"] is None
    monkeypatch.undo()
    assert await process_provider_events(wctx, tenant.id, [event["id"]]) == {"processed": 1}


async def test_sweeper_enqueues_what_was_acknowledged_but_never_applied(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    await _one_pending(pclient, tenant, "lost1@example.no")
    await _one_pending(pclient, tenant, "lost2@example.no")
    ids = [e["id"] for e in await events_of(db, tenant)]
    await sweep_provider_events(wctx)  # ours are too new: the request's own job is still expected
    assert events_job_id(tenant.id, ids) not in await queued(wctx["redis"])
    # the requests' own jobs are lost (Redis lost them): a minute later the sweeper brings the events back
    await forget_request_jobs(wctx["redis"], tenant)
    await db.execute(
        "UPDATE provider_events SET received_at = received_at - interval '1 minute' WHERE tenant_id = $1",
        tenant.id,
    )
    await sweep_provider_events(wctx)
    assert events_job_id(tenant.id, ids) in await queued(wctx["redis"])
    # a claimed event is left alone until its lease runs out
    await db.execute(
        "UPDATE provider_events SET claimed_until = now() + interval '1 minute' WHERE id = $1", ids[0]
    )
    await drain(wctx["redis"])
    await sweep_provider_events(wctx)
    assert events_job_id(tenant.id, ids[1:]) in await queued(wctx["redis"])
    await db.execute("UPDATE provider_events SET claimed_until = NULL WHERE id = $1", ids[0])
    await apply_pending(wctx, db, tenant)
    await sweep_provider_events(wctx)
    assert all(e["status"] == "processed" for e in await events_of(db, tenant))


async def test_prune_forgets_expired_nonces_and_old_finished_events_but_twilios(
    pclient: Client, tenant: Tenant, db: asyncpg.Connection, wctx: dict[str, Any]
) -> None:
    provider = await _one_pending(pclient, tenant)
    case = shared.fixture("twilio_inbound_stop.json")
    twilio_config = {"kind": "twilio", "auth_token": case["auth_token"], "url": case["url"]}
    twilio_provider = await configure(pclient, tenant, twilio_config)
    stop = case["raw_body"].encode()
    assert (
        await pclient.post(inbound_path(twilio_provider), content=stop, headers=case["headers"])
    ).is_success
    await apply_pending(wctx, db, tenant)
    await db.execute(
        "UPDATE provider_nonces SET expires_at = now() - interval '1 second' WHERE provider_id = $1",
        provider["id"],
    )
    await db.execute(
        "UPDATE provider_events SET processed_at = now() - interval '8 days' WHERE tenant_id = $1", tenant.id
    )
    pruned = await prune_provider_records(wctx)
    assert pruned["nonces"] >= 1 and pruned["events"] >= 1
    assert (
        await db.fetchval("SELECT count(*) FROM provider_nonces WHERE provider_id = $1", provider["id"]) == 0
    )
    # Twilio signs no timestamp: its event id is kept, so the captured STOP replayed later does nothing
    [kept] = await events_of(db, tenant)
    assert kept["event_key"] == "SM0123456789abcdef0123456789abcdef"
    replay = await pclient.post(inbound_path(twilio_provider), content=stop, headers=case["headers"])
    assert replay.is_success and len(await events_of(db, tenant)) == 1


async def test_a_real_worker_applies_enqueued_provider_events(
    pclient: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    settings: Settings,
    queries: Queries,
    fetcher: FakeFetcher,
) -> None:
    await _one_pending(pclient, tenant, "worker@example.no")
    ids = [e["id"] for e in await events_of(db, tenant)]
    queue_name = f"test-providers-worker-{secrets.token_hex(4)}"
    redis = await create_pool(redis_settings(settings.require_redis_url()), default_queue_name=queue_name)
    try:
        # the request's own job (deterministic id) sits in the default queue, which no worker reads here
        assert await enqueue(redis, JOB_PROCESS_PROVIDER_EVENTS, tenant.id, ids)
        worker = Worker(
            functions=WorkerSettings.functions,
            on_startup=startup,
            on_shutdown=shutdown,
            redis_pool=redis,
            queue_name=queue_name,
            burst=True,
            poll_delay=0.05,
            ctx={"settings": settings, "sns_fetcher": fetcher},
            handle_signals=False,
        )
        await worker.async_run()
        await worker.close()
    finally:
        for raw in await redis.zrange(queue_name, 0, -1):
            await redis.delete(f"arq:job:{raw.decode()}")
        await redis.delete(queue_name)
        await redis.aclose()
    assert [e["status"] for e in await events_of(db, tenant)] == ["processed"]
    assert (await decision(pclient, tenant, "worker@example.no"))[2] == "complained"


async def test_a_lost_enqueue_still_acknowledges_and_the_event_waits_for_the_sweeper(
    pclient: Client,
    tenant: Tenant,
    db: asyncpg.Connection,
    settings: Settings,
    queries: Queries,
    wctx: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from suppress.providers.certificates import SnsCertificates
    from suppress.providers.configs import ProviderConfigs, provider_box
    from suppress.providers.inbox import ProviderInbox
    from suppress.providers.model import InboundRequest

    class RedisDown:
        async def enqueue_job(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("redis is down")

    key = SECRETS["mailgun"]
    provider = await configure(pclient, tenant, {"kind": "mailgun", "signing_key": key})
    configs = ProviderConfigs(
        wctx["pool"], queries, provider_box(settings.require_secret()), public_url=settings.public_url
    )
    inbox = ProviderInbox(configs, wctx["pool"], queries, RedisDown(), SnsCertificates(FakeFetcher()))  # type: ignore[arg-type]
    event = {"event": "complained", "id": "lost", "timestamp": 1772446530.1, "recipient": "lost@example.no"}
    request = InboundRequest(method="POST", headers={}, query="", body=mailgun_body(key, event))
    receipt = await inbox.receive("mailgun", provider["id"], request)
    assert (receipt.stored, receipt.duplicates) == (1, 0)
    assert "the sweeper will" in caplog.text
    [stored] = await events_of(db, tenant)
    assert stored["status"] == "pending"


async def test_openapi_lists_the_provider_routes_and_the_inbound_one_needs_no_key(pclient: Client) -> None:
    schema = (await pclient.get("/schema/openapi.json")).json()
    assert {"/v1/providers", "/v1/providers/{provider_id}", "/v1/providers/{kind}/{provider_id}"} <= set(
        schema["paths"]
    )
    assert schema["paths"]["/v1/providers/{kind}/{provider_id}"]["post"]["security"] == [{}]
    body = json.dumps(schema["paths"]["/v1/providers"]["post"]["requestBody"])
    for name in ("SesIn", "SendGridIn", "MailgunIn", "PostmarkIn", "TwilioIn", "VonageIn"):
        assert name in body and name in schema["components"]["schemas"], body
