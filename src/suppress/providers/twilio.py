"""Twilio Programmable Messaging: inbound SMS (INTEGRATIONS.md §5).

Verification: `X-Twilio-Signature` must be Base64 HMAC-SHA1, keyed with the account auth token, of
the URL Twilio requested (the configured public webhook URL; for a GET webhook with the received
query string appended) followed by every POST parameter sorted by name, each as name + value
(repeated names: their values sorted, duplicates once). Like Twilio's SDKs, the URL is tried with
and without the default port. Constant-time comparison.

Events (key: `MessageSid`): the SMS goes through the SMS keyword path (`sms.SmsInbox`): the body's
keyword, or Twilio's `OptOutType` (Advanced Opt-Out) when the body is a custom keyword we do not
know. With `replies: auto` our confirmation is not sent when Twilio answered the keyword itself
(`OptOutType` present, or one of Twilio's default English keywords).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import defaultdict
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from suppress.providers import model
from suppress.sms import parse_keyword

KIND: Final = "twilio"
SIGNATURE_HEADER: Final = "x-twilio-signature"
MAX_FIELDS: Final = 500
# Keywords Twilio handles (and answers) itself on every number (INTEGRATIONS.md §5.1).
TWILIO_KEYWORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "START", "YES", "UNSTOP", "HELP", "INFO"}
)
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


def signature_of(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """The X-Twilio-Signature Twilio sends for `url` and these POST parameters."""
    values: defaultdict[str, set[str]] = defaultdict(set)
    for name, value in params:
        values[name].add(value)
    data = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def url_variants(url: str) -> list[str]:
    """The URL as given, and with the scheme's default port added or removed."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        return [url]
    if default is None or parts.username or parts.password:
        return [url]
    if port is None:
        return [url, urlunsplit(parts._replace(netloc=f"{host}:{default}"))]
    if port == default:
        return [url, urlunsplit(parts._replace(netloc=host))]
    return [url]


def form_params(raw: str) -> list[tuple[str, str]]:
    """The name/value pairs of a form body or query string (blank values kept)."""
    try:
        return parse_qsl(raw, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except ValueError:
        raise model.MalformedProviderRequest("the parameters are not form-encoded UTF-8") from None


def verify(request: model.InboundRequest, provider: model.LoadedProvider, now: datetime) -> model.Verified:
    """Verify one inbound-SMS webhook (POST form, or GET with the parameters in the query)."""
    signature = request.header(SIGNATURE_HEADER)
    if not signature:
        raise model.CredentialsMissing("the X-Twilio-Signature header is missing")
    url = provider.settings.url or provider.inbound_url
    if request.method == "GET":
        params = form_params(request.query)
        if request.query:
            url += ("&" if "?" in url else "?") + request.query
        signed: list[tuple[str, str]] = []
    else:
        try:
            params = form_params(request.body.decode("ascii"))
        except UnicodeDecodeError:
            raise model.MalformedProviderRequest("the body is not form-encoded") from None
        signed = params
    token = provider.credentials["auth_token"]
    given = signature.strip().encode("utf-8", "replace")
    matches = [hmac.compare_digest(signature_of(token, u, signed).encode(), given) for u in url_variants(url)]
    if not any(matches):
        raise model.ProviderRejected("the X-Twilio-Signature does not match")
    payload: dict[str, Any] = {}
    for name, value in params:
        payload.setdefault(name, value)
    key = model.text_of(payload.get("MessageSid"), 64) or model.fingerprint(
        request.body or request.query.encode()
    )
    return model.Verified(events=[model.Received(key, payload)])


def interpret(payload: dict[str, Any], settings: model.ProviderSettings) -> list[model.Change]:
    """An inbound SMS for the keyword path."""
    sender, to = model.text_of(payload.get("From"), 64), model.text_of(payload.get("To"), 64)
    body = payload.get("Body")
    text = body if isinstance(body, str) else ""
    opt_out = model.text_of(payload.get("OptOutType"), 20)
    opt_out = opt_out.upper() if opt_out else None
    detail = {"opt_out_type": opt_out} if opt_out else {}
    if sender is None or to is None:
        return [model.Change(action="ignore", detail={"reason": "no From or To"})]
    if opt_out in ("STOP", "START", "HELP") and parse_keyword(text) is None:
        text = opt_out  # a custom Advanced Opt-Out keyword we do not know: Twilio's verdict stands
    twilio_answered = opt_out is not None or text.strip().upper() in TWILIO_KEYWORDS
    replies = settings.replies or "auto"
    reply = replies == "always" or (replies == "auto" and not twilio_answered)
    return [
        model.Change(
            action="sms",
            channel="sms",
            address=sender,
            to=to,
            text=text[:1600],
            reply=reply,
            message_id=model.text_of(payload.get("MessageSid"), 64),
            detail=detail,
        )
    ]
