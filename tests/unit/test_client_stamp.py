"""`suppress_client.stamp`: the unsubscribe headers go only on a message for exactly the checked
recipient, and never carry a control character."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from hypothesis import given
from hypothesis import strategies as st

from suppress_client import CheckResult, StampError, stamp

LINK = "<https://unsub.example/u/AStoken>"


def _result(recipient: str = "kari@example.no", link: str = LINK) -> CheckResult:
    return CheckResult(
        recipient=recipient,
        allowed=True,
        basis="consent",
        list_unsubscribe=link,
        list_unsubscribe_post="List-Unsubscribe=One-Click",
    )


def _message(**headers: str) -> EmailMessage:
    message = EmailMessage()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    return message


def test_a_message_to_the_checked_recipient_alone_is_stamped() -> None:
    message = _message(To="Kari Nordmann <Kari@Example.no>")
    stamp(message, _result())
    assert message["List-Unsubscribe"] == LINK
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        # co-recipients would get Kari's link and could unsubscribe her
        ({"To": "kari@example.no, per@example.no"}, "exactly one"),
        ({"To": "Kari <kari@example.no>, Kari again <kari@example.no>"}, "exactly one"),
        ({"To": "undisclosed-recipients:;"}, "exactly one"),
        ({"Cc": "per@example.no", "To": "kari@example.no"}, "Cc"),
        ({"Bcc": "per@example.no", "To": "kari@example.no"}, "Bcc"),
        ({}, "no To"),  # nobody checked yet: whoever is added later gets the link
        ({"To": "per@example.no"}, "not to the checked recipient"),
    ],
)
def test_a_message_not_addressed_to_exactly_the_checked_recipient_is_refused(
    headers: dict[str, str], match: str
) -> None:
    message = _message(**headers)
    with pytest.raises(StampError, match=match):
        stamp(message, _result())
    assert "List-Unsubscribe" not in message


def test_two_to_headers_are_two_recipients() -> None:
    raw = EmailMessage()  # EmailMessage refuses a second To, a parsed message may have two
    raw._headers.append(("To", "kari@example.no"))
    raw._headers.append(("To", "per@example.no"))
    with pytest.raises(StampError, match="exactly one"):
        stamp(raw, _result())


@pytest.mark.parametrize("char", ["\x00", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\t", "\r", "\n"])
def test_control_characters_in_the_values_are_refused(char: str) -> None:
    message = _message(To="kari@example.no")
    with pytest.raises(StampError, match="control character"):
        stamp(message, _result(link=f"<https://unsub.example/u/A{char}B>"))
    assert "List-Unsubscribe" not in message


@pytest.mark.parametrize("char", ["\x00", "\x0b", "\x1f"])
def test_control_characters_in_the_recipient_headers_are_refused(char: str) -> None:
    raw = EmailMessage()
    raw._headers.append(("To", f"kari@example.no{char}"))
    with pytest.raises(StampError, match="control character"):
        stamp(raw, _result())


@given(st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=30))
def test_no_stamped_value_carries_a_control_character(text: str) -> None:
    message = _message(To="kari@example.no")
    try:
        stamp(message, _result(link=f"<https://unsub.example/u/{text}>"))
    except StampError:
        return
    written = str(message["List-Unsubscribe"])
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in written)


def test_check_recipient_false_still_refuses_control_characters() -> None:
    with pytest.raises(StampError, match="control character"):
        stamp(EmailMessage(), _result(link="<https://unsub.example/u/A\x00>"), check_recipient=False)
    message = EmailMessage()
    stamp(message, _result(), check_recipient=False)  # To added later: the caller's responsibility
    assert message["List-Unsubscribe"] == LINK


def test_a_parsed_message_with_a_folded_to_header_is_stamped() -> None:
    raw = b"From: news@shop.example\r\nTo: Kari Nordmann with a long display name\r\n\t<kari@example.no>\r\n\r\nHi\r\n"
    message = message_from_bytes(raw, policy=policy.default)
    stamp(message, _result())
    assert message["List-Unsubscribe"] == LINK
