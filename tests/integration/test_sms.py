"""Inbound SMS keywords and SMS replies: parsing (property tests), reply texts, the HTTP route
against real PostgreSQL and Redis, the senders against a local HTTP server, and a real worker."""

from __future__ import annotations

import json
import logging
import pickle
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from arq import ArqRedis, Retry, create_pool
from arq.jobs import Job, JobStatus
from arq.worker import Worker
from hypothesis import assume, given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient
from workers.settings import WorkerSettings
from workers.sms import send_sms_reply

from suppress.addresses import AddressHasher
from suppress.config import ConfigurationError, DerivedKeys, Settings
from suppress.db import create_pool as create_db_pool
from suppress.queue import JOB_SEND_SMS_REPLY, enqueue, redis_settings
from suppress.recipients import Recipients
from suppress.sms import (
    HttpSmsSender,
    InboundSmsIn,
    LoggingSmsSender,
    MaskedNumber,
    SmsInbox,
    SmsMessage,
    SmsRejected,
    SmsUnavailable,
    build_sms_sender,
    fold,
    help_job_id,
    language_of_region,
    mask_number,
    parse_keyword,
    reply_job_id,
    reply_text,
)
from suppress.sql import Queries
from suppress.tenants import Authenticator, Principal
from tests.conftest import Tenant
from tests.support import consent, decision

Client = AsyncTestClient[Litestar]

# POLICY.md "SMS keywords", with the language each is answered in (None: the tenant's region decides).
KEYWORDS: dict[str, tuple[str, str | None]] = {
    "STOP": ("stop", "en"),
    "STOPP": ("stop", "nb"),
    "STOPALL": ("stop", "en"),
    "AVMELD": ("stop", "nb"),
    "AVSLUTT": ("stop", "nb"),
    "SLUTT": ("stop", "nb"),
    "UNSUBSCRIBE": ("stop", "en"),
    "END": ("stop", "en"),
    "QUIT": ("stop", "en"),
    "REVOKE": ("stop", "en"),
    "OPTOUT": ("stop", "en"),
    "OPT-OUT": ("stop", "en"),
    "CANCEL": ("stop", "en"),
    "START": ("start", None),
    "UNSTOP": ("start", "en"),
    "YES": ("start", "en"),
    "JA": ("start", "nb"),
    "HELP": ("help", "en"),
    "HJELP": ("help", "nb"),
    "INFO": ("help", None),
}
PHONE = "+4791234567"
SHORT_CODE = "2017"

# -- parsing -------------------------------------------------------------------------------------

SURROUNDING = st.text(
    alphabet=st.sampled_from(
        [
            *" \t\n\r.,!?;:'\"«»()[]*#~-–—…¡¿",
            "\u00a0",
            "\u200b",
            "🛑",
            "😀",
            "👍",
            "\U0001f3fd",
            "✋",
            "\ufe0f",
        ]
    ),
    max_size=6,
)
MARKS = st.lists(st.sampled_from([chr(c) for c in range(0x300, 0x370)]), max_size=2)


@st.composite
def accented(draw: st.DrawFn, word: str) -> str:
    """`word` in random case, with random accents."""
    letters = []
    for ch in word:
        letters.append(ch.upper() if draw(st.booleans()) else ch.lower())
        letters.extend(draw(MARKS))
    return "".join(letters)


@st.composite
def spelled(draw: st.DrawFn, word: str) -> str:
    """`word` in random case, with random accents, inside random punctuation, space and emoji."""
    return draw(SURROUNDING) + draw(accented(word)) + draw(SURROUNDING)


@st.composite
def any_keyword(draw: st.DrawFn) -> tuple[str, str]:
    word = draw(st.sampled_from(sorted(KEYWORDS)))
    return word, draw(spelled(word))


@given(any_keyword())
def test_every_keyword_matches_in_any_case_accent_and_punctuation(case: tuple[str, str]) -> None:
    word, text = case
    found = parse_keyword(text)
    assert found is not None, text
    action, language = KEYWORDS[word]
    assert found.keyword == word
    assert found.action == action
    assert found.language == (language or "nb")


@given(
    SURROUNDING,
    accented("opt"),
    st.text(alphabet=" \t\u00a0\u3000", min_size=1, max_size=3),
    accented("out"),
    SURROUNDING,
)
def test_opt_out_as_two_words_is_a_stop(before: str, first: str, space: str, second: str, after: str) -> None:
    found = parse_keyword(before + first + space + second + after)
    assert found is not None
    assert (found.keyword, found.action, found.language) == ("OPT OUT", "stop", "en")


WORD = st.one_of(
    st.sampled_from([*KEYWORDS, *(k.lower() for k in KEYWORDS), "please", "Stopp!", "opt", "out"]),
    st.text(alphabet=st.characters(categories=("L", "N")), min_size=1, max_size=8),
)


@given(
    st.lists(WORD, min_size=2, max_size=5),
    st.text(alphabet=" \t\n\u00a0\u2003", min_size=1, max_size=3),
    SURROUNDING,
    SURROUNDING,
)
def test_two_or_more_words_are_never_a_keyword(words: list[str], space: str, before: str, after: str) -> None:
    assume([fold(w) for w in words] != ["opt", "out"])
    assert parse_keyword(before + space.join(words) + after) is None


@given(st.text(max_size=300))
def test_parse_keyword_never_raises(text: str) -> None:
    found = parse_keyword(text)
    assert found is None or found.action in {"stop", "start", "help"}


@pytest.mark.parametrize(
    "text",
    [
        "please stop sending",
        "stop sending me messages",
        "STOP STOP",
        "Stopp å sende",
        "nonstop",
        "stopped",
        "s.t.o.p",
        "",
        "   ",
        "!!!",
        "opt.out",
        "opt out now",
    ],
)
def test_sentences_and_near_misses_are_no_keyword(text: str) -> None:
    assert parse_keyword(text) is None


@pytest.mark.parametrize(
    ("text", "keyword", "language"),
    [
        ("STOP!", "STOP", "en"),
        (" stopp. ", "STOPP", "nb"),
        ("«Stopp»", "STOPP", "nb"),
        ("Stöpp", "STOPP", "nb"),
        ("ＳＴＯＰ", "STOP", "en"),
        ("🛑 avslutt 🛑", "AVSLUTT", "nb"),
        ("Opt–Out", "OPT-OUT", "en"),
        ("Ja!", "JA", "nb"),
        ("yes", "YES", "en"),
        ("hjelp?", "HJELP", "nb"),
        ("Help", "HELP", "en"),
    ],
)
def test_examples(text: str, keyword: str, language: str) -> None:
    found = parse_keyword(text)
    assert found is not None and (found.keyword, found.language) == (keyword, language)


def test_words_of_both_languages_take_the_tenants_language() -> None:
    assert language_of_region("NO") == "nb" and language_of_region("no") == "nb"
    assert language_of_region("SE") == "en" and language_of_region("US") == "en"
    for word in ("START", "info"):
        found_en = parse_keyword(word, ambiguous="en")
        found_nb = parse_keyword(word, ambiguous="nb")
        assert found_en is not None and found_en.language == "en"
        assert found_nb is not None and found_nb.language == "nb"
    # STOP is English and STOPP Norwegian whatever the tenant.
    assert parse_keyword("stop", ambiguous="nb") == parse_keyword("stop", ambiguous="en")
    stopp = parse_keyword("stopp", ambiguous="en")
    assert stopp is not None and stopp.language == "nb"


# -- reply texts ---------------------------------------------------------------------------------


def test_reply_is_in_the_keywords_language_and_names_the_tenant() -> None:
    for word, (action, language) in KEYWORDS.items():
        found = parse_keyword(word, ambiguous="en")
        assert found is not None
        reply = reply_text(found.action, found.language, "Acme AS")
        assert reply.startswith("Acme AS: "), reply
        norwegian = any(w in reply for w in ("Du ", "Send STOPP"))
        assert norwegian == ((language or "en") == "nb"), (word, reply)
        assert action in {"stop", "start", "help"}


def test_reply_texts_confirm_and_never_market() -> None:
    assert "avmeldt" in reply_text("stop", "nb", "Acme AS")
    assert "unsubscribed" in reply_text("stop", "en", "Acme AS")
    assert "STOPP" in reply_text("start", "nb", "Acme AS")
    assert "STOP" in reply_text("start", "en", "Acme AS")
    for action in ("stop", "start", "help"):
        for language in ("nb", "en"):
            reply = reply_text(action, language, "Acme AS")  # type: ignore[arg-type]
            lowered = reply.lower()
            assert "http" not in lowered and "www" not in lowered and "%" not in reply
            assert len(reply) <= 160
    # Nothing in a STOP confirmation invites the person back (POLICY.md N6).
    assert "START" not in reply_text("stop", "nb", "Acme AS") + reply_text("stop", "en", "Acme AS")


def test_docs_show_every_keyword_and_reply_text() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "sms.md").read_text()
    for word in [*KEYWORDS, "OPT OUT"]:
        assert word in docs, word
    for action in ("stop", "start", "help"):
        for language in ("nb", "en"):
            assert reply_text(action, language, "{name}") in docs, (action, language)  # type: ignore[arg-type]


def test_a_long_tenant_name_is_shortened_in_the_reply() -> None:
    reply = reply_text("stop", "nb", "A Very Long Company Name That Goes On\n And On AS")
    assert reply.startswith("A Very Long Company Name That Goes On A…: ")
    assert "\n" not in reply


# -- masking and configuration -------------------------------------------------------------------


def test_numbers_are_masked_for_logs() -> None:
    assert mask_number(PHONE) == "+47******67"
    assert mask_number("2017") == "****"
    masked = MaskedNumber(PHONE)
    assert masked == PHONE and str(masked) == PHONE
    assert PHONE not in repr(masked) and PHONE not in repr([masked])
    again = pickle.loads(pickle.dumps(masked))  # the form arq stores job arguments in
    assert again == PHONE and type(again) is MaskedNumber


def test_reply_job_ids() -> None:
    assert reply_job_id(17, 1234) == "sms-reply:17:1234"
    digest = secrets.token_bytes(32)
    at = datetime(2026, 3, 2, 10, 15, 1, tzinfo=UTC)
    same_minute = help_job_id(17, digest, "HELP", at.replace(second=59))
    assert help_job_id(17, digest, "HELP", at) == same_minute
    assert help_job_id(17, digest, "HELP", at.astimezone(timezone(timedelta(hours=1)))) == same_minute
    assert help_job_id(17, digest, "HELP", at + timedelta(minutes=1)) != same_minute
    assert help_job_id(17, digest, "HJELP", at) != same_minute
    assert help_job_id(18, digest, "HELP", at) != help_job_id(17, digest, "HELP", at)
    assert help_job_id(17, secrets.token_bytes(32), "HELP", at) != same_minute
    assert same_minute.startswith("sms-reply:17:help:") and digest.hex() not in same_minute


def test_sms_settings_from_the_environment() -> None:
    assert Settings.from_env({}).sms_sender == "log"
    with pytest.raises(ConfigurationError, match="SUPPRESS_SMS_SENDER"):
        Settings.from_env({"SUPPRESS_SMS_SENDER": "pigeon"})
    with pytest.raises(ConfigurationError, match="SUPPRESS_SMS_HTTP_URL"):
        Settings.from_env({"SUPPRESS_SMS_SENDER": "http", "SUPPRESS_SMS_HTTP_TOKEN": "t"})
    with pytest.raises(ConfigurationError, match="SUPPRESS_SMS_HTTP_URL"):
        Settings.from_env(
            {
                "SUPPRESS_SMS_SENDER": "http",
                "SUPPRESS_SMS_HTTP_URL": "ftp://x",
                "SUPPRESS_SMS_HTTP_TOKEN": "t",
            }
        )
    with pytest.raises(ConfigurationError, match="SUPPRESS_SMS_HTTP_TOKEN"):
        Settings.from_env({"SUPPRESS_SMS_SENDER": "http", "SUPPRESS_SMS_HTTP_URL": "https://sms.example"})
    token = "tok-" + secrets.token_hex(8)
    settings = Settings.from_env(
        {
            "SUPPRESS_SMS_SENDER": "HTTP",
            "SUPPRESS_SMS_HTTP_URL": "https://sms.example/send",
            "SUPPRESS_SMS_HTTP_TOKEN": token,
        }
    )
    assert (settings.sms_sender, settings.sms_http_url, settings.sms_http_token) == (
        "http",
        "https://sms.example/send",
        token,
    )
    assert token not in repr(settings) and token not in str(settings)


async def test_build_sms_sender() -> None:
    sender = build_sms_sender(Settings())
    assert isinstance(sender, LoggingSmsSender)
    token = "tok-" + secrets.token_hex(8)
    http = build_sms_sender(
        Settings(sms_sender="http", sms_http_url="https://sms.example", sms_http_token=token)
    )
    assert isinstance(http, HttpSmsSender) and token not in repr(http)
    await http.aclose()
    with pytest.raises(ConfigurationError):
        build_sms_sender(Settings(sms_sender="http"))


# -- the route -----------------------------------------------------------------------------------


async def inbound(
    client: Client, tenant: Tenant, text: str, *, sender: str = PHONE, scope: str = "write", **extra: Any
) -> Any:
    body = {"from": sender, "to": SHORT_CODE, "text": text, **extra}
    return await client.post("/v1/inbound/sms", json=body, headers=tenant.auth(scope))


async def written(db: asyncpg.Connection, tenant: Tenant) -> tuple[int, int]:
    events = await db.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id)
    rows = await db.fetchval("SELECT count(*) FROM recipients WHERE tenant_id = $1", tenant.id)
    return events, rows


async def job_status(settings: Settings, job_id: str) -> JobStatus:
    redis = await create_pool(redis_settings(settings.require_redis_url()))
    try:
        return await Job(job_id, redis).status()
    finally:
        await redis.aclose()


async def test_stop_suppresses_sms_only_and_queues_one_reply(
    client: Client, tenant: Tenant, db: asyncpg.Connection, settings: Settings
) -> None:
    await consent(client, tenant, PHONE, channel="sms")
    await consent(client, tenant, "ola@example.no")
    assert await decision(client, tenant, PHONE, channel="sms") == (True, "consent", None)

    response = await inbound(client, tenant, " Stopp. ")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["keyword"] == "STOPP" and body["action"] == "stop" and body["language"] == "nb"
    assert body["reply"].startswith(f"{tenant.name}: ") and "avmeldt" in body["reply"]
    assert isinstance(body["event_id"], int)

    assert await decision(client, tenant, PHONE, channel="sms") == (False, None, "unsubscribed")
    assert await decision(client, tenant, "ola@example.no") == (True, "consent", None)
    event = await db.fetchrow(
        "SELECT kind, source, channel, data || coalesce(personal, '{}') AS data FROM events WHERE tenant_id = $1 AND id = $2",
        tenant.id,
        body["event_id"],
    )
    assert event is not None
    assert (event["kind"], event["source"], event["channel"]) == ("unsubscribed", "sms_keyword", "sms")
    data = event["data"] if isinstance(event["data"], dict) else json.loads(event["data"])
    assert data["text"] == " Stopp. " and data["to"] == SHORT_CODE
    assert await job_status(settings, reply_job_id(tenant.id, body["event_id"])) != JobStatus.not_found


async def test_repeated_stop_is_harmless(client: Client, tenant: Tenant, db: asyncpg.Connection) -> None:
    first = (await inbound(client, tenant, "STOP")).json()
    second = (await inbound(client, tenant, "stop!")).json()
    assert first["action"] == second["action"] == "stop" and first["language"] == "en"
    assert second["event_id"] != first["event_id"]
    assert await decision(client, tenant, PHONE, channel="sms") == (False, None, "unsubscribed")
    assert await db.fetchval("SELECT count(*) FROM suppressions WHERE tenant_id = $1", tenant.id) == 1


async def test_start_after_stop_lifts_it(client: Client, tenant: Tenant, db: asyncpg.Connection) -> None:
    await inbound(client, tenant, "AVMELD")
    response = await inbound(client, tenant, "Ja")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["keyword"], body["action"], body["language"]) == ("JA", "start", "nb")
    assert "STOPP" in body["reply"] and isinstance(body["event_id"], int)
    assert await decision(client, tenant, PHONE, channel="sms") == (True, "consent", None)
    kinds = await db.fetch("SELECT kind, source FROM events WHERE tenant_id = $1 ORDER BY id", tenant.id)
    assert [(k["kind"], k["source"]) for k in kinds] == [
        ("unsubscribed", "sms_keyword"),
        ("consent_given", "sms_keyword"),
        ("suppression_lifted", "sms_keyword"),
    ]
    evidence = await db.fetchval("SELECT evidence FROM consents WHERE tenant_id = $1", tenant.id)
    evidence = evidence if isinstance(evidence, dict) else json.loads(evidence)
    assert evidence == {"text": "Ja", "to": SHORT_CODE}


async def test_start_alone_is_a_consent(client: Client, tenant: Tenant) -> None:
    body = (await inbound(client, tenant, "START")).json()
    assert (body["action"], body["language"]) == ("start", "nb")  # the test tenant's region is NO
    assert await decision(client, tenant, PHONE, channel="sms") == (True, "consent", None)


async def test_national_spelling_of_the_number_is_the_same_recipient(client: Client, tenant: Tenant) -> None:
    await consent(client, tenant, PHONE, channel="sms")
    assert (await inbound(client, tenant, "stopp", sender="912 34 567")).status_code == 200
    assert await decision(client, tenant, PHONE, channel="sms") == (False, None, "unsubscribed")


async def test_help_replies_and_writes_nothing(
    client: Client, tenant: Tenant, db: asyncpg.Connection, settings: Settings
) -> None:
    body = (await inbound(client, tenant, "HJELP")).json()
    assert (body["keyword"], body["action"], body["language"], body["event_id"]) == (
        "HJELP",
        "help",
        "nb",
        None,
    )
    assert body["reply"] == reply_text("help", "nb", tenant.name)
    assert (await inbound(client, tenant, "help")).json()["language"] == "en"
    assert await written(db, tenant) == (0, 0)


@pytest.mark.parametrize("text", ["please stop sending", "Hei! Når åpner dere?", "", "STOP STOP"])
async def test_other_text_is_no_keyword_and_writes_nothing(
    client: Client, tenant: Tenant, db: asyncpg.Connection, text: str
) -> None:
    response = await inbound(client, tenant, text)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "keyword": None,
        "action": None,
        "language": None,
        "reply": None,
        "event_id": None,
        "ignored_because": None,
    }
    assert await written(db, tenant) == (0, 0)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"from": "not a number", "to": SHORT_CODE, "text": "STOP"}, 422, "invalid_address"),
        ({"from": "+47123", "to": SHORT_CODE, "text": "STOP"}, 422, "invalid_address"),
        ({"from": PHONE, "to": SHORT_CODE, "text": "STOP", "extra": 1}, 422, "invalid_request"),
        ({"from": PHONE, "to": SHORT_CODE, "text": "STOP" + " " * 1597}, 422, "invalid_request"),
        ({"from": PHONE, "text": "STOP"}, 422, "invalid_request"),
        ({"from": PHONE, "to": "", "text": "STOP"}, 422, "invalid_request"),
        ({"from": "", "to": SHORT_CODE, "text": "STOP"}, 422, "invalid_request"),
        ({"from": PHONE, "to": "  ", "text": "STOP"}, 422, "invalid_request"),
        ({"from": PHONE, "to": SHORT_CODE, "text": 7}, 422, "invalid_request"),
    ],
)
async def test_bad_input_is_a_4xx_and_writes_nothing(
    client: Client, tenant: Tenant, db: asyncpg.Connection, body: dict[str, Any], status: int, code: str
) -> None:
    response = await client.post("/v1/inbound/sms", json=body, headers=tenant.auth("write"))
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert await written(db, tenant) == (0, 0)


async def test_malformed_json_is_a_400(client: Client, tenant: Tenant, db: asyncpg.Connection) -> None:
    headers = {**tenant.auth("write"), "Content-Type": "application/json"}
    response = await client.post("/v1/inbound/sms", content=b'{"from": "+4791', headers=headers)
    assert response.status_code == 400
    assert await written(db, tenant) == (0, 0)


async def test_a_text_of_1600_characters_is_accepted(client: Client, tenant: Tenant) -> None:
    response = await inbound(client, tenant, "STOP" + " " * 1596)
    assert response.status_code == 200 and response.json()["action"] == "stop"


@pytest.mark.parametrize(("scope", "status"), [("check", 403), ("read", 403), ("admin", 200)])
async def test_needs_the_write_scope(
    client: Client, tenant: Tenant, db: asyncpg.Connection, scope: str, status: int
) -> None:
    response = await inbound(client, tenant, "STOP", scope=scope)
    assert response.status_code == status, response.text
    if status != 200:
        assert await written(db, tenant) == (0, 0)


async def test_needs_an_api_key(client: Client, tenant: Tenant, db: asyncpg.Connection) -> None:
    response = await client.post("/v1/inbound/sms", json={"from": PHONE, "to": SHORT_CODE, "text": "STOP"})
    assert response.status_code == 401
    assert await written(db, tenant) == (0, 0)


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Core:
    """The Recipients core on a pool of the test's own event loop (the test client's app runs in
    another thread and loop, so its services cannot be borrowed)."""

    recipients: Recipients
    principal: Principal


@pytest.fixture
async def core(settings: Settings, queries: Queries, tenant: Tenant) -> AsyncIterator[Core]:
    pool = await create_db_pool(settings.require_database_url(), size=2)
    try:
        principal = await Authenticator(pool, queries).authenticate(f"Bearer {tenant.keys['write']}")
        hasher = AddressHasher(DerivedKeys.from_settings(settings).address_hash_key)
        yield Core(recipients=Recipients(pool, queries, hasher), principal=principal)
    finally:
        await pool.close()


async def test_stop_stands_when_redis_is_down(
    core: Core, client: Client, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    dead = ArqRedis(host="127.0.0.1", port=_dead_port(), socket_connect_timeout=0.5)
    try:
        inbox = SmsInbox(core.recipients, dead)
        with caplog.at_level(logging.WARNING, logger="suppress.sms"):
            result = await inbox.receive(
                core.principal, InboundSmsIn(from_=PHONE, to=SHORT_CODE, text="STOP"), datetime.now(UTC)
            )
    finally:
        await dead.aclose()
    assert result.action == "stop" and result.event_id is not None
    assert await decision(client, tenant, PHONE, channel="sms") == (False, None, "unsubscribed")
    assert "could not enqueue SMS reply" in caplog.text and PHONE not in caplog.text


# -- senders and the job -------------------------------------------------------------------------


@dataclass
class Provider:
    """A local stand-in for an SMS provider's HTTP API: records requests, answers scripted statuses."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def provider() -> Iterator[Provider]:
    record = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            record.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status = record.statuses.pop(0) if record.statuses else 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    record.url = f"http://127.0.0.1:{server.server_address[1]}/v1/sms"
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


TOKEN = "provider-token-" + "t" * 20
MESSAGE = SmsMessage(to=PHONE, sender=SHORT_CODE, text="Acme AS: stopped.", idempotency_key="sms-reply:1:42")


async def test_http_sender_posts_the_documented_request(provider: Provider) -> None:
    sender = HttpSmsSender(provider.url, TOKEN)
    try:
        await sender.send(MESSAGE)
    finally:
        await sender.aclose()
    [(path, headers, body)] = provider.requests
    assert path == "/v1/sms"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == "sms-reply:1:42"
    assert json.loads(body) == {
        "to": PHONE,
        "from": SHORT_CODE,
        "text": "Acme AS: stopped.",
        "idempotency_key": "sms-reply:1:42",
    }


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, SmsRejected),
        (404, SmsRejected),
        (422, SmsRejected),
        (408, SmsUnavailable),
        (429, SmsUnavailable),
        (500, SmsUnavailable),
        (503, SmsUnavailable),
        (302, SmsUnavailable),
    ],
)
async def test_http_sender_classifies_failures(
    provider: Provider, status: int, error: type[Exception]
) -> None:
    provider.statuses.append(status)
    sender = HttpSmsSender(provider.url, TOKEN)
    try:
        with pytest.raises(error):
            await sender.send(MESSAGE)
    finally:
        await sender.aclose()
    assert len(provider.requests) == 1


async def test_http_sender_unreachable_is_transient() -> None:
    sender = HttpSmsSender(f"http://127.0.0.1:{_dead_port()}/sms", TOKEN, timeout=2)
    try:
        with pytest.raises(SmsUnavailable) as caught:
            await sender.send(MESSAGE)
    finally:
        await sender.aclose()
    assert TOKEN not in str(caught.value)


async def test_job_retries_a_500_then_succeeds(provider: Provider) -> None:
    provider.statuses.append(500)
    sender = HttpSmsSender(provider.url, TOKEN)
    try:
        ctx: dict[str, Any] = {"sms_sender": sender, "job_try": 1}
        with pytest.raises(Retry) as retry:
            await send_sms_reply(ctx, 1, PHONE, SHORT_CODE, "Acme AS: stopped.", "sms-reply:1:42")
        assert retry.value.defer_score == 5000
        ctx["job_try"] = 2
        assert (
            await send_sms_reply(ctx, 1, PHONE, SHORT_CODE, "Acme AS: stopped.", "sms-reply:1:42") == "sent"
        )
    finally:
        await sender.aclose()
    assert len(provider.requests) == 2
    assert {json.loads(body)["idempotency_key"] for _, _, body in provider.requests} == {"sms-reply:1:42"}


async def test_job_gives_up_on_a_400(provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    provider.statuses.append(400)
    sender = HttpSmsSender(provider.url, TOKEN)
    try:
        with pytest.raises(SmsRejected):
            await send_sms_reply({"sms_sender": sender, "job_try": 1}, 1, PHONE, SHORT_CODE, "x", "k")
    finally:
        await sender.aclose()
    assert len(provider.requests) == 1
    assert PHONE not in caplog.text


async def test_logging_sender_masks_the_number(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="suppress.sms"):
        await send_sms_reply(
            {"sms_sender": LoggingSmsSender(), "job_try": 1}, 1, PHONE, SHORT_CODE, "hi", "k"
        )
    assert "+47******67" in caplog.text and "hi" in caplog.text
    assert PHONE not in caplog.text


async def test_real_worker_sends_one_reply_for_two_identical_enqueues(
    core: Core,
    tenant: Tenant,
    settings: Settings,
    provider: Provider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue_name = f"test-sms-{secrets.token_hex(4)}"  # its own queue: no other test's jobs, no other worker
    worker_settings = msgspec.structs.replace(
        settings, sms_sender="http", sms_http_url=provider.url, sms_http_token=TOKEN
    )
    arq_pool = await create_pool(redis_settings(settings.require_redis_url()), default_queue_name=queue_name)
    try:
        result = await SmsInbox(core.recipients, arq_pool).receive(
            core.principal, InboundSmsIn(from_=PHONE, to=SHORT_CODE, text="STOPP"), datetime.now(UTC)
        )
        assert result.event_id is not None and result.reply is not None
        key = reply_job_id(tenant.id, result.event_id)
        assert not await enqueue(
            arq_pool, JOB_SEND_SMS_REPLY, tenant.id, PHONE, SHORT_CODE, result.reply, key, job_id=key
        )
        worker = Worker(
            functions=WorkerSettings.functions,
            on_startup=WorkerSettings.on_startup,
            on_shutdown=WorkerSettings.on_shutdown,
            redis_settings=redis_settings(settings.require_redis_url()),
            queue_name=queue_name,
            ctx={"settings": worker_settings},
            burst=True,
            poll_delay=0.05,
            handle_signals=False,
        )
        with caplog.at_level(logging.INFO):
            try:
                await worker.main()
            finally:
                await worker.close()
        assert worker.jobs_complete == 1 and worker.jobs_failed == 0
        # a late duplicate, after the job ran, is refused as well
        assert not await enqueue(
            arq_pool, JOB_SEND_SMS_REPLY, tenant.id, PHONE, SHORT_CODE, result.reply, key, job_id=key
        )
    finally:
        await arq_pool.aclose()
    [(_, headers, body)] = provider.requests
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert json.loads(body) == {"to": PHONE, "from": SHORT_CODE, "text": result.reply, "idempotency_key": key}
    assert "send_sms_reply" in caplog.text and PHONE not in caplog.text and TOKEN not in caplog.text


# -- numbers that must not be written to or told they are subscribed -------------------------------


@pytest.mark.parametrize("text", ["START", "Ja", "stop", "HJELP"])
async def test_any_keyword_from_an_erased_number_is_acknowledged_and_changes_nothing(
    client: Client, tenant: Tenant, db: asyncpg.Connection, text: str
) -> None:
    await consent(client, tenant, PHONE, channel="sms")
    erased = await client.post(f"/v1/recipients/sms/{PHONE}/erase", headers=tenant.auth("admin"))
    assert erased.status_code == 200, erased.text
    before = await written(db, tenant)
    suppressions = await db.fetch("SELECT reason FROM suppressions WHERE tenant_id = $1", tenant.id)
    response = await inbound(client, tenant, text)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["event_id"] is None and body["ignored_because"] == "erased"
    assert body["reply"] is None or body["reply"] not in {
        reply_text("start", "nb", tenant.name),
        reply_text("start", "en", tenant.name),
    }
    assert await written(db, tenant) == before
    assert await db.fetch("SELECT reason FROM suppressions WHERE tenant_id = $1", tenant.id) == suppressions
    assert await decision(client, tenant, PHONE, channel="sms") == (False, None, "erased")


@pytest.mark.parametrize("text", ["START", "unstop", "STOPP"])
async def test_any_keyword_from_a_complained_number_is_acknowledged_and_changes_nothing(
    client: Client, tenant: Tenant, db: asyncpg.Connection, text: str
) -> None:
    complaint = {"channel": "sms", "address": PHONE, "reason": "complained"}
    await client.post("/v1/suppressions", json=complaint, headers=tenant.auth("admin"))
    before = await written(db, tenant)
    response = await inbound(client, tenant, text)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["event_id"] is None and body["ignored_because"] == "complained"
    assert body["reply"] is None or "STOP" not in body["reply"]
    assert await written(db, tenant) == before
    assert await db.fetchval("SELECT count(*) FROM consents WHERE tenant_id = $1", tenant.id) == 0
    assert await decision(client, tenant, PHONE, channel="sms") == (False, None, "complained")
