"""Inbound SMS: the webhook that turns STOP, START and HELP replies into writes and a reply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from suppress.api.auth import requires
from suppress.sms import InboundSmsIn, InboundSmsResult, SmsInbox
from suppress.tenants import Principal


@post(
    "/v1/inbound/sms",
    status_code=200,
    summary="Receive an SMS a person sent: STOP, START and HELP keywords",
    tags=["sms"],
    description="`from` is the person (a phone number, read with the tenant's region), `to` the number "
    "or short code they wrote to. A single-word keyword (Norwegian or English; case, accents and "
    "surrounding punctuation ignored) acts: stop → SMS marketing suppressed, start → consent (lifts an "
    "earlier stop), help → nothing written. The write is durable before the answer; `reply` is queued "
    "for the SMS sender (a Redis outage loses the reply, never the stop). From an erased or complained "
    "number any keyword is acknowledged (200) and changes nothing: `ignored_because` says which, and "
    "a start gets no reply. Any other text: all fields null and nothing written. Needs `write`. "
    "Keywords and texts: docs/sms.md.",
    guards=[requires("write")],
)
async def inbound_sms(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal], data: JSONBody[InboundSmsIn]
) -> InboundSmsResult:
    inbox = SmsInbox(request.app.state.recipients, request.app.state.queue)
    return await inbox.receive(principal, data, datetime.now(UTC))


routes = [inbound_sms]
