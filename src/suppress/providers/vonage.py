"""Vonage (Nexmo) SMS API: inbound SMS with signed webhooks (INTEGRATIONS.md §6.1).

Verification: every received parameter but `sig` (as a GET query, a form body or a JSON body),
each string value with `&` and `=` replaced by `_`, sorted by name and written `&name=value`; `sig`
must be the hex HMAC (MD5, SHA-1, SHA-256 or SHA-512, as configured) of that string keyed with the
account's signature secret, or for the legacy "MD5 hash" method hex MD5 of the string followed by
the secret; compared in constant time, case-insensitively. The signed `timestamp` must lie within
the configured age (default one day: Vonage resends for 24 hours).

Events (key: `messageId`): the SMS goes through the SMS keyword path (`sms.SmsInbox`). Vonage
numbers arrive without `+`; a `+` is put in front. Binary messages are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any, Final

import msgspec

from suppress.providers import model
from suppress.providers.twilio import form_params

KIND: Final = "vonage"
_HMACS: Final = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def string_to_sign(params: dict[str, str]) -> str:
    """`&name=value` for every parameter but `sig`, sorted by name, `&` and `=` in values as `_`."""
    return "".join(
        f"&{name}={params[name].replace('&', '_').replace('=', '_')}"
        for name in sorted(params)
        if name != "sig"
    )


def signature_of(params: dict[str, str], secret: str, method: str) -> str:
    """The `sig` Vonage sends for these parameters."""
    data = string_to_sign(params).encode()
    if method == "md5hash":
        return hashlib.md5(data + secret.encode(), usedforsecurity=False).hexdigest()
    return hmac.new(secret.encode(), data, _HMACS[method]).hexdigest()


def params_of(request: model.InboundRequest) -> dict[str, str]:
    """The received parameters: the query of a GET, else the form or JSON body."""
    if request.method == "GET":
        return dict(form_params(request.query))
    if request.content_type.split(";")[0].strip().lower() == "application/json":
        try:
            document = msgspec.json.decode(request.body, type=dict[str, Any])
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise model.MalformedProviderRequest("the body is not a JSON object") from None
        return {k: v if isinstance(v, str) else str(v) for k, v in document.items() if v is not None}
    try:
        return dict(form_params(request.body.decode("ascii")))
    except UnicodeDecodeError:
        raise model.MalformedProviderRequest("the body is not form-encoded") from None


def verify(request: model.InboundRequest, provider: model.LoadedProvider, now: datetime) -> model.Verified:
    """Verify one inbound-SMS webhook."""
    params = params_of(request)
    sig = params.get("sig")
    if not sig:
        raise model.CredentialsMissing("the request is not signed (no sig): enable signed webhooks")
    method = provider.settings.signature_method or "sha256"
    expected = signature_of(params, provider.credentials["signature_secret"], method)
    if not hmac.compare_digest(expected.encode(), sig.strip().lower().encode("utf-8", "replace")):
        raise model.ProviderRejected("the Vonage signature does not match")
    if "timestamp" not in params:
        raise model.ProviderRejected("the signed parameters carry no timestamp")
    try:
        signed_at = model.unix_time(params["timestamp"])
    except model.MalformedProviderRequest:
        raise model.ProviderRejected("the signed timestamp is not Unix seconds") from None
    model.check_timestamp(signed_at, now, provider.settings.max_age(KIND))
    payload = {k: v for k, v in params.items() if k != "sig"}
    key = model.text_of(payload.get("messageId"), 100) or model.fingerprint(string_to_sign(payload).encode())
    return model.Verified(events=[model.Received(key, payload)])


def interpret(payload: dict[str, Any], settings: model.ProviderSettings) -> list[model.Change]:
    """An inbound SMS for the keyword path."""
    sender, to = model.text_of(payload.get("msisdn"), 64), model.text_of(payload.get("to"), 64)
    if sender is None or to is None:
        return [model.Change(action="ignore", detail={"reason": "no msisdn or to"})]
    if payload.get("type") == "binary":
        return [model.Change(action="ignore", detail={"reason": "binary message"})]
    text = payload.get("text")
    return [
        model.Change(
            action="sms",
            channel="sms",
            address="+" + sender if sender.isdigit() else sender,
            to=to,
            text=(text if isinstance(text, str) else "")[:1600],
            reply=(settings.replies or "always") != "never",
            message_id=model.text_of(payload.get("messageId"), 100),
        )
    ]
