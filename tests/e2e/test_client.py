"""suppress.client against a real `suppress serve` process: checks split into several requests and put
back together in order, errors as exceptions, and unsubscribe headers that survive SMTP."""

from __future__ import annotations

import asyncio
import email
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from suppress.config import Settings
from suppress_client import (
    AsyncSuppressClient,
    AuthenticationError,
    CheckResult,
    ConnectionFailed,
    InvalidRequestError,
    PermissionDeniedError,
    StampError,
    SuppressClient,
    stamp,
)
from tests.conftest import PUBLIC_URL, TEST_SECRET, Tenant


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    """`suppress serve` in its own process, on a free port."""
    port = _free_port()
    env = {
        **os.environ,
        "SUPPRESS_DATABASE_URL": settings.require_database_url(),
        "SUPPRESS_REDIS_URL": settings.require_redis_url(),
        "SUPPRESS_SECRET": TEST_SECRET,
        "SUPPRESS_PUBLIC_URL": PUBLIC_URL,
    }
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed at teardown; the server writes to it)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "suppress.cli",
            "serve",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"suppress serve did not start: {log.read().decode()}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


class CountingTransport(httpx.HTTPTransport):
    """Records how many recipients each check request carried."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/checks":
            self.batches.append(len(httpx.Response(200, content=request.read()).json()["recipients"]))
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/checks":
            self.batches.append(len(httpx.Response(200, content=await request.aread()).json()["recipients"]))
        return await super().handle_async_request(request)


async def _suppress_some(server: str, tenant: Tenant, addresses: list[str]) -> None:
    async with httpx.AsyncClient(base_url=server, headers=tenant.auth("write")) as http:
        for address in addresses:
            response = await http.post(
                "/v1/suppressions", json={"channel": "email", "address": address, "reason": "unsubscribed"}
            )
            assert response.status_code == 201, response.text
        response = await http.post("/v1/consents", json={"channel": "email", "address": "*", "source": "x"})
        assert response.status_code == 422  # the server is real: bad input is refused


def _recipients() -> list[str]:
    return [f"r{i}@example.no" if i % 11 else f"bad-address-{i}" for i in range(25)]


async def test_check_splits_into_requests_and_reassembles_in_order(server: str, tenant: Tenant) -> None:
    recipients = _recipients()
    suppressed = ["r3@example.no", "r10@example.no", "r21@example.no"]  # one in each request
    await _suppress_some(server, tenant, suppressed)
    transport = CountingTransport()

    def check() -> Any:
        with SuppressClient(server, tenant.keys["check"], max_batch=10, transport=transport) as client:
            return client.check(iter(recipients), channel="email", purpose="transactional")

    answer = await asyncio.to_thread(check)
    assert transport.batches == [10, 10, 5]
    assert [r.recipient for r in answer.results] == recipients
    for result in answer.results:
        if result.recipient.startswith("bad"):
            assert (result.allowed, result.reason) == (False, "invalid_address")
        else:
            assert result.allowed and result.basis == "transactional"  # opt-outs do not block receipts
    assert answer.summary.allowed == 22 and answer.summary.denied == 3
    assert answer.summary.reasons == {"invalid_address": 3} and answer.summary.bases == {"transactional": 22}

    marketing_transport = AsyncCountingTransport()
    async with AsyncSuppressClient(
        server, tenant.keys["check"], max_batch=7, transport=marketing_transport
    ) as client:
        marketing = await client.check(recipients, channel="email", purpose="marketing")
    assert marketing_transport.batches == [7, 7, 7, 4]
    assert [r.recipient for r in marketing.results] == recipients
    denied = {r.recipient: r.reason for r in marketing.results if not r.allowed}
    assert {a: denied[a] for a in suppressed} == dict.fromkeys(suppressed, "unsubscribed")
    assert marketing.summary.denied == len(recipients)  # no consent: no basis, unsubscribed, or invalid
    assert marketing.summary.reasons == {"no_basis": 19, "unsubscribed": 3, "invalid_address": 3}


async def test_problem_details_become_exceptions(server: str, tenant: Tenant) -> None:
    async with AsyncSuppressClient(server, "sk_" + "x" * 43) as client:
        with pytest.raises(AuthenticationError) as unknown:
            await client.check(["a@example.no"], channel="email", purpose="marketing")
    assert unknown.value.status == 401 and unknown.value.code == "not_authenticated"
    async with AsyncSuppressClient(server, tenant.keys["read"]) as client:
        with pytest.raises(PermissionDeniedError):
            await client.check(["a@example.no"], channel="email", purpose="marketing")
    async with AsyncSuppressClient(server, tenant.keys["check"]) as client:
        with pytest.raises(InvalidRequestError) as bad:
            await client.check(["a@example.no"], channel="email", purpose="marketing", topic="no-such-topic")
        assert bad.value.status == 422 and bad.value.code == "unknown_topic"
        assert bad.value.problem["type"] == "urn:suppress:problem:unknown_topic"
        empty = await client.check([], channel="email", purpose="marketing")
        assert empty.results == [] and empty.summary.allowed == 0
        with pytest.raises(TypeError):
            await client.check("a@example.no", channel="email", purpose="marketing")
    async with AsyncSuppressClient(f"http://127.0.0.1:{_free_port()}", tenant.keys["check"]) as client:
        with pytest.raises(ConnectionFailed):
            await client.check(["a@example.no"], channel="email", purpose="marketing")
    with pytest.raises(ValueError, match="max_batch"):
        SuppressClient(server, "k", max_batch=100_001)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content or envelope.content)
        return "250 OK"


async def test_stamped_message_arrives_over_smtp_with_one_click_headers(server: str, tenant: Tenant) -> None:
    async with httpx.AsyncClient(base_url=server, headers=tenant.auth("write")) as http:
        response = await http.post(
            "/v1/consents", json={"channel": "email", "address": "reader@example.no", "source": "signup_form"}
        )
        assert response.status_code == 201, response.text
    async with AsyncSuppressClient(server, tenant.keys["check"]) as client:
        checked = await client.check(
            ["reader@example.no", "stranger@example.no"], channel="email", purpose="marketing"
        )
    allowed, denied = checked.results
    assert (
        allowed.allowed
        and allowed.list_unsubscribe
        and allowed.list_unsubscribe.startswith(f"<{PUBLIC_URL}/u/")
    )
    assert len(allowed.list_unsubscribe) > 78  # long enough that naive header folding would mangle it

    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        # the documented example (docs/client.md)
        message = EmailMessage()
        message["From"] = "news@shop.example"
        message["To"] = "Reader <reader@example.no>"
        message["Subject"] = "Spring offers"
        message.set_content("Hello!")
        stamp(message, allowed)

        def send() -> None:
            with smtplib.SMTP(controller.hostname, controller.port) as smtp:
                smtp.send_message(message)

        await asyncio.to_thread(send)
    finally:
        controller.stop()
    [raw] = inbox.messages
    received = email.message_from_bytes(raw, policy=policy.default)
    assert received["List-Unsubscribe"] == allowed.list_unsubscribe
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert b"=?utf-8?" not in raw  # written as is, not as RFC 2047 encoded words

    # the link in the header really unsubscribes (RFC 8058 one-click POST, no auth)
    url = allowed.list_unsubscribe.strip("<>").replace(PUBLIC_URL, server)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            url,
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200
    async with AsyncSuppressClient(server, tenant.keys["check"]) as client:
        after = await client.check(["reader@example.no"], channel="email", purpose="marketing")
    assert after.results[0].reason == "unsubscribed"

    with pytest.raises(StampError, match="denied"):
        stamp(EmailMessage(), denied)
    other = EmailMessage()
    other["To"] = "someone-else@example.no"
    with pytest.raises(StampError, match="not to the checked recipient"):
        stamp(other, allowed)


def test_stamp_replaces_headers_and_leaves_results_without_them_alone() -> None:
    message = EmailMessage()
    message["To"] = "a@example.no"
    message["List-Unsubscribe"] = "<https://old.example/u/1>"
    result = CheckResult(
        recipient="A@Example.no",
        allowed=True,
        basis="consent",
        list_unsubscribe="<https://unsub.example/u/2>",
        list_unsubscribe_post="List-Unsubscribe=One-Click",
    )
    stamp(message, result)
    assert message.get_all("List-Unsubscribe") == ["<https://unsub.example/u/2>"]
    receipt = EmailMessage()
    stamp(receipt, CheckResult(recipient="a@example.no", allowed=True, basis="transactional"))
    assert "List-Unsubscribe" not in receipt
