"""The redacting log formatter and the access log's route names."""

from __future__ import annotations

import logging
import sys

import pytest

from suppress.logs import RedactingFormatter, redact, redacted_path

TOKEN = "AYowlvruzfhD-UDpOiRmk8rLfSMsUp-zGsf04EX-eeC8KRvFnM7rukMcKB44IOXTsl8p47PAxssfHmtBcZJo6LarzY3oabc"
KEY = "sk_98XuZGOryusGn_O10pNXxrS-cQNeuBi0PBA-SQdFwpY"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (f'127.0.0.1:49744 - "GET /u/{TOKEN} HTTP/1.1" 400', TOKEN),
        (f"https://unsub.example.com/u/{TOKEN}?x=1", TOKEN),
        ('"POST /v1/recipients/email/victim%40example.org/erase HTTP/1.1" 200', "victim%40example.org"),
        ("GET /v1/recipients/sms/%2B4791234567/export", "%2B4791234567"),
        ("DELETE /v1/suppressions/email/ola.nordmann@example.no?reason=manual", "ola.nordmann@example.no"),
        ("POST /v1/customers/C-1001/erase", "C-1001"),
        (f"Authorization: Bearer {KEY}", KEY),
        ("could not apply {'address': 'kari+news@example.no'}", "kari+news@example.no"),
        ("send_sms_reply(1, '+47 912 34 567', 'STOPP')", "912 34 567"),
        ("reply to 004791234567", "4791234567"),
    ],
)
def test_redact_removes_tokens_addresses_and_keys(line: str, secret: str) -> None:
    assert secret not in redact(line)


def test_redact_keeps_what_is_not_personal() -> None:
    line = "GET /v1/recipients/{channel}/{address} 200 4.1ms; import 3/7: done after 2 batch(es)"
    assert redact(line) == line
    assert redact("POST /v1/customers/{ref}/erase 200") == "POST /v1/customers/{ref}/erase 200"


def test_the_formatter_redacts_arguments_and_tracebacks() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ValueError(f"bad address ola@example.no in /u/{TOKEN}")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed for %s", ("per@example.no",), None
        )
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert "ValueError" in text
    for secret in ("ola@example.no", TOKEN, "per@example.no"):
        assert secret not in text


def test_requests_are_named_by_their_route_template() -> None:
    assert redacted_path({"path": "/u/abc", "path_template": "/u/{token}"}) == "/u/{token}"
    assert redacted_path({"path": "/nothing/ola@example.no"}) == "(no route)"


@pytest.mark.parametrize("enabled", [True, False])
def test_the_access_log_wraps_send_only_when_it_logs(enabled: bool, caplog: pytest.LogCaptureFixture) -> None:
    """`serve --no-access-log` costs nothing per request: the application gets the server's own
    `send`; with the log on, one line per request with the answer's status."""
    import asyncio

    from suppress.api.access import AccessLog
    from suppress.logs import access_logging

    seen: list[object] = []

    async def app(scope: object, receive: object, send: object) -> None:
        seen.append(send)
        await send({"type": "http.response.start", "status": 204, "headers": []})  # type: ignore[operator]

    async def send(message: object) -> None:
        pass

    async def receive() -> object:
        return {}

    scope = {"type": "http", "method": "POST", "path": "/v1/checks", "path_template": "/v1/checks"}
    access_logging(enabled=enabled)
    try:
        with caplog.at_level(logging.INFO if enabled else logging.WARNING, logger="suppress.access"):
            asyncio.run(AccessLog(app)(scope, receive, send))  # type: ignore[arg-type]
    finally:
        access_logging(enabled=True)
    assert (seen[0] is send) is not enabled
    lines = [r.getMessage() for r in caplog.records if r.name == "suppress.access"]
    assert [line.rsplit(" ", 1)[0] for line in lines] == (["POST /v1/checks 204"] if enabled else [])
