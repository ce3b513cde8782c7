"""Inbound SMS keywords (STOP/START/HELP, Norwegian and English) and the sender of the replies.

A keyword is one word, compared without case, accents or surrounding punctuation (POLICY.md "SMS
keywords"; "opt out" is the one two-word form, from U2). STOP suppresses SMS marketing for the
tenant, START is a consent given by the person (it lifts an earlier STOP), HELP only gets a reply.
The write is durable before the caller answers; the reply goes out later through a worker and an
`SmsSender`. docs/sms.md has the keyword table, the reply texts and the HTTP sender's contract.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, Protocol

import httpx
import msgspec
from msgspec import Meta

from suppress import queue
from suppress.config import ConfigurationError, Settings
from suppress.consents import ConsentIn
from suppress.policy import active_suppressions
from suppress.recipients import Recipients
from suppress.suppressions import SuppressionIn
from suppress.tenants import Principal
from suppress.writing import Inbound

log = logging.getLogger(__name__)

Action = Literal["stop", "start", "help"]
Language = Literal["nb", "en"]

# Folded spelling → (action, language); None = a word in both languages, see `parse_keyword`.
_KEYWORDS: Final[dict[str, tuple[Action, Language | None]]] = {
    "stop": ("stop", "en"),
    "stopp": ("stop", "nb"),
    "stopall": ("stop", "en"),
    "avmeld": ("stop", "nb"),
    "avslutt": ("stop", "nb"),
    "slutt": ("stop", "nb"),
    "unsubscribe": ("stop", "en"),
    "end": ("stop", "en"),
    "quit": ("stop", "en"),
    "revoke": ("stop", "en"),
    "optout": ("stop", "en"),
    "opt-out": ("stop", "en"),
    "cancel": ("stop", "en"),
    "start": ("start", None),
    "unstop": ("start", "en"),
    "yes": ("start", "en"),
    "ja": ("start", "nb"),
    "help": ("help", "en"),
    "hjelp": ("help", "nb"),
    "info": ("help", None),
}
OPT_OUT: Final = "OPT OUT"
# Regions whose tenants get Norwegian replies to START and INFO, which are words in both languages.
NORWEGIAN_REGIONS: Final = frozenset({"NO", "SJ", "BV"})
# Long tenant names would push the reply over one SMS segment.
MAX_NAME_IN_REPLY: Final = 40

_REPLIES: Final[dict[tuple[Action, Language], str]] = {
    ("stop", "nb"): "{name}: Du er nå avmeldt og får ikke flere markedsføringsmeldinger på SMS fra oss.",
    ("start", "nb"): "{name}: Du er nå påmeldt markedsføring på SMS fra oss igjen. "
    "Send STOPP for å melde deg av.",
    ("help", "nb"): "{name}: Send STOPP for å melde deg av markedsføring på SMS fra oss.",
    ("stop", "en"): "{name}: You are unsubscribed and will get no more marketing text messages from us.",
    ("start", "en"): "{name}: You are subscribed to marketing text messages from us again. "
    "Reply STOP to unsubscribe.",
    ("help", "en"): "{name}: Reply STOP to unsubscribe from marketing text messages from us.",
}


class Keyword(msgspec.Struct, frozen=True, kw_only=True):
    """A recognised keyword: its canonical spelling, what it does and the language to answer in."""

    keyword: str
    action: Action
    language: Language


def _unmark(text: str) -> str:
    """NFKD without the combining marks: 'Stöpp' → 'Stopp', 'ＳＴＯＰ' → 'STOP'."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if unicodedata.category(ch)[0] != "M")


def fold(word: str) -> str:
    """The form keywords are compared in: no accents, case-folded, every dash spelled '-'."""
    # Marks go before and after casefold(): it can turn a mark into a letter (U+0345) and back.
    folded = _unmark(_unmark(word).casefold())
    return "".join("-" if unicodedata.category(ch) == "Pd" else ch for ch in folded)


def _core(text: str) -> str:
    """The text without surrounding whitespace, punctuation, symbols and emoji."""
    start, end = 0, len(text)
    while start < end and not text[start].isalnum():
        start += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return text[start:end]


def parse_keyword(text: str, *, ambiguous: Language = "nb") -> Keyword | None:
    """The keyword `text` is, or None: one word (or "opt out"), ignoring case, accents and the
    punctuation around it; a sentence that merely contains a keyword is none. START and INFO are
    Norwegian and English words alike: they are answered in `ambiguous`."""
    words = _core(text).split()
    if len(words) == 2 and [fold(w) for w in words] == ["opt", "out"]:
        return Keyword(keyword=OPT_OUT, action="stop", language="en")
    if len(words) != 1:
        return None
    folded = fold(words[0])
    found = _KEYWORDS.get(folded)
    if found is None:
        return None
    action, language = found
    return Keyword(keyword=folded.upper(), action=action, language=language or ambiguous)


def language_of_region(region: str) -> Language:
    """The reply language for words of both languages: Norwegian for Norwegian tenants."""
    return "nb" if region.upper() in NORWEGIAN_REGIONS else "en"


def reply_text(action: Action, language: Language, tenant_name: str) -> str:
    """The confirmation for a keyword: who we are and what happened, never marketing."""
    name = " ".join(tenant_name.split())
    if len(name) > MAX_NAME_IN_REPLY:
        name = name[: MAX_NAME_IN_REPLY - 1].rstrip() + "…"
    return _REPLIES[(action, language)].format(name=name)


def mask_number(number: str) -> str:
    """A phone number fit for logs: country code and last two digits, '+47******67'."""
    if len(number) <= 5:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 5) + number[-2:]


class MaskedNumber(str):
    """A phone number whose repr is masked, so the worker's log line of job arguments hides it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(mask_number(str(self)))


# -- inbound -------------------------------------------------------------------------------------

SmsNumber = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"\S")]
SmsText = Annotated[str, Meta(max_length=1600)]
# How long the API waits for Redis to take a reply job before giving up on the reply.
ENQUEUE_WAIT: Final = 2.0


class InboundSmsIn(Inbound, frozen=True):
    """An SMS a person sent to one of the tenant's numbers: `from` the person, `to` our number."""

    from_: SmsNumber = msgspec.field(name="from")
    to: SmsNumber
    text: SmsText


Ignored = Literal["erased", "complained"]


class InboundSmsResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the text was and what it did; all null when it was no keyword (nothing written).

    `ignored_because`: the number was erased or complained; the keyword was acknowledged and
    nothing written (a STOP still gets its confirmation, a START no reply at all)."""

    keyword: str | None = None
    action: Action | None = None
    language: Language | None = None
    reply: str | None = None
    event_id: int | None = None
    ignored_because: Ignored | None = None


def reply_job_id(tenant_id: int, event_id: int) -> str:
    """Job id and idempotency key of the confirmation of a STOP or START: one per ledger event."""
    return f"sms-reply:{tenant_id}:{event_id}"


def help_job_id(tenant_id: int, address_hash: bytes, keyword: str, now: datetime) -> str:
    """HELP writes no event: one reply per tenant, sender, keyword and minute. The keyed address
    hash keeps the number out of the id (ids are logged)."""
    minute = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    digest = hashlib.sha256(f"{tenant_id}:{address_hash.hex()}:{keyword}:{minute}".encode()).hexdigest()
    return f"sms-reply:{tenant_id}:help:{digest[:32]}"


class SmsInbox:
    """Turns an inbound SMS into a write through the Recipients core, then queues the reply."""

    def __init__(self, recipients: Recipients, job_queue: queue.Queue | None) -> None:
        self._recipients = recipients
        self._queue = job_queue

    async def receive(self, principal: Principal, sms: InboundSmsIn, now: datetime) -> InboundSmsResult:
        """Apply the keyword (durably) and queue one reply; a failed enqueue never undoes the write."""
        number, address_hash = self._recipients.key(principal, "sms", sms.from_)
        found = parse_keyword(sms.text, ambiguous=language_of_region(principal.default_region))
        if found is None:
            return InboundSmsResult()
        blocked = await self._blocked(principal, address_hash, now)
        if blocked is not None:
            return await self._acknowledge(principal, number, address_hash, sms, found, blocked, now)
        evidence = {"text": sms.text, "to": sms.to}
        event_id: int | None = None
        if found.action == "stop":
            stop = SuppressionIn(channel="sms", address=number, reason="unsubscribed")
            written = await self._recipients.suppress(
                principal, stop, now, source="sms_keyword", kind="unsubscribed", extra=evidence
            )
            event_id = written.event_id
        elif found.action == "start":
            consent = ConsentIn(channel="sms", address=number, source="sms_keyword", evidence=evidence)
            event_id = (await self._recipients.give_consent(principal, consent, now)).event_id
        reply = reply_text(found.action, found.language, principal.tenant_name)
        job_id = (
            help_job_id(principal.tenant_id, address_hash, found.keyword, now)
            if event_id is None
            else reply_job_id(principal.tenant_id, event_id)
        )
        await self._enqueue_reply(principal.tenant_id, number, sms.to.strip(), reply, job_id)
        return InboundSmsResult(
            keyword=found.keyword,
            action=found.action,
            language=found.language,
            reply=reply,
            event_id=event_id,
        )

    async def _blocked(self, principal: Principal, address_hash: bytes, now: datetime) -> Ignored | None:
        """Whether the number was erased or complained: then no keyword changes anything (an
        erased number keeps only its suppression; a START never outweighs a complaint)."""
        state = await self._recipients.state(principal, "sms", address_hash)
        if state is None:
            return None
        if state.erased:
            return "erased"
        if "complained" in active_suppressions(state, now):
            return "complained"
        return None

    async def _acknowledge(
        self,
        principal: Principal,
        number: str,
        address_hash: bytes,
        sms: InboundSmsIn,
        found: Keyword,
        blocked: Ignored,
        now: datetime,
    ) -> InboundSmsResult:
        """A keyword from an erased or complained number: 200 and nothing written. A STOP or HELP is
        answered as usual (the number gets no marketing either way); a START gets no reply, since
        no subscription follows from it."""
        reply = None
        if found.action != "start":
            reply = reply_text(found.action, found.language, principal.tenant_name)
            job_id = help_job_id(principal.tenant_id, address_hash, found.keyword, now)
            await self._enqueue_reply(principal.tenant_id, number, sms.to.strip(), reply, job_id)
        log.info("SMS keyword %s from a number that is %s: nothing written", found.keyword, blocked)
        return InboundSmsResult(
            keyword=found.keyword,
            action=found.action,
            language=found.language,
            reply=reply,
            ignored_because=blocked,
        )

    async def _enqueue_reply(self, tenant_id: int, to: str, sender_id: str, text: str, job_id: str) -> None:
        if self._queue is None:
            log.warning("no job queue: SMS reply %s not sent", job_id)
            return
        try:
            await asyncio.wait_for(
                queue.enqueue(
                    self._queue,
                    queue.JOB_SEND_SMS_REPLY,
                    tenant_id,
                    MaskedNumber(to),
                    sender_id,
                    text,
                    job_id,
                    job_id=job_id,
                ),
                ENQUEUE_WAIT,
            )
        except Exception as exc:  # Redis down: the keyword's write stands, only the reply is lost
            log.warning("could not enqueue SMS reply %s (%s); it is not sent", job_id, type(exc).__name__)


# -- outbound ------------------------------------------------------------------------------------


class SmsMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One outbound SMS; `sender` is the number or short code it comes from."""

    to: str
    sender: str
    text: str
    idempotency_key: str


class SmsSendError(Exception):
    """The SMS could not be handed to the provider."""


class SmsRejected(SmsSendError):
    """The provider refused the SMS for good (a 4xx other than 408/429): retrying will not help."""


class SmsUnavailable(SmsSendError):
    """The provider could not take the SMS now (timeout, connection error, 408, 429, 5xx)."""


class SmsSender(Protocol):
    """Hands an SMS to a provider; raises SmsRejected or SmsUnavailable when it cannot."""

    async def send(self, message: SmsMessage) -> None: ...

    async def aclose(self) -> None: ...


class LoggingSmsSender:
    """The default: logs each SMS (recipient masked) instead of sending it."""

    async def send(self, message: SmsMessage) -> None:
        log.info(
            "SMS to %s from %s (key %s): %s",
            mask_number(message.to),
            message.sender,
            message.idempotency_key,
            message.text,
        )

    async def aclose(self) -> None:
        return None


class _OutboundBody(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    from_: str = msgspec.field(name="from")
    text: str
    idempotency_key: str


class HttpSmsSender:
    """POSTs `{to, from, text, idempotency_key}` as JSON with a bearer token (docs/sms.md)."""

    TIMEOUT: Final = 10.0

    def __init__(self, url: str, token: str, *, timeout: float = TIMEOUT) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        # Never follow redirects: the bearer token must go to the configured URL only.
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    def __repr__(self) -> str:
        return f"HttpSmsSender(url={self._url!r}, token=***)"

    async def send(self, message: SmsMessage) -> None:
        body = msgspec.json.encode(
            _OutboundBody(
                to=message.to,
                from_=message.sender,
                text=message.text,
                idempotency_key=message.idempotency_key,
            )
        )
        headers = {**self._headers, "Idempotency-Key": message.idempotency_key}
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SmsUnavailable(f"SMS provider unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        if 400 <= status < 500 and status not in (408, 429):
            raise SmsRejected(f"SMS provider refused the message: HTTP {status}")
        raise SmsUnavailable(f"SMS provider answered HTTP {status}")

    async def aclose(self) -> None:
        await self._client.aclose()


def build_sms_sender(settings: Settings) -> SmsSender:
    """The sender the settings choose: `log` (default) or `http`."""
    if settings.sms_sender == "log":
        return LoggingSmsSender()
    if not settings.sms_http_url or not settings.sms_http_token:
        raise ConfigurationError(
            "SUPPRESS_SMS_SENDER=http needs SUPPRESS_SMS_HTTP_URL and SUPPRESS_SMS_HTTP_TOKEN"
        )
    return HttpSmsSender(settings.sms_http_url, settings.sms_http_token)
