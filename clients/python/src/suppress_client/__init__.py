"""A client for senders: pre-send checks of any size, and the unsubscribe headers on each message.

    from suppress_client import SuppressClient, stamp

    with SuppressClient("https://suppress.example.com", api_key) as client:
        checked = client.check(addresses, channel="email", purpose="marketing", topic="news")
    for result in checked.results:
        if result.allowed:
            message = build_message(result.recipient)     # an email.message.EmailMessage
            stamp(message, result)                        # List-Unsubscribe + List-Unsubscribe-Post
            smtp.send_message(message)

`check()` splits any list into requests of at most `max_batch` recipients (the API takes 100 000),
sends them one after another and returns one `CheckResponse`: results in input order, summary
counts added up. Errors come back as exceptions built from the API's problem details
(`AuthenticationError`, `InvalidRequestError`, ...; all `APIError`), and a server that cannot be
reached as `ConnectionFailed`. `AsyncSuppressClient` is the same for asyncio. docs/client.md has
the details.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.policy import Policy
from email.utils import getaddresses
from itertools import islice
from typing import Any, Literal

import httpx

MAX_BATCH = 100_000
USER_AGENT = "suppress-client/1"
ONE_CLICK = "List-Unsubscribe=One-Click"

Channel = Literal["email", "sms"]
Purpose = Literal["marketing", "transactional"]
Offer = Literal["own", "partner"]


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """The decision for one recipient: allowed or not, on which basis or why, and the unsubscribe
    link and headers for an allowed marketing recipient."""

    recipient: str
    allowed: bool
    basis: str | None = None
    reason: str | None = None
    unsubscribe_url: str | None = None
    list_unsubscribe: str | None = None
    list_unsubscribe_post: str | None = None


@dataclass(frozen=True, kw_only=True)
class CheckSummary:
    allowed: int = 0
    denied: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    bases: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CheckResponse:
    """Results in the order of the recipients given, and counts over all of them."""

    results: list[CheckResult]
    summary: CheckSummary

    @property
    def allowed(self) -> list[CheckResult]:
        return [r for r in self.results if r.allowed]


class _NotAnAnswer(ValueError):
    """The document is not a check answer."""


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _NotAnAnswer(f"{where} is {type(value).__name__}")
    return value


def _optional_str(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(_typed(value, str, name))


def _counts(value: Any, where: str) -> dict[str, int]:
    return {str(k): _typed(n, int, f"{where}.{k}") for k, n in _typed(value, dict, where).items()}


def _parse_answer(content: bytes) -> CheckResponse:
    """A check answer from JSON; fields the API adds later are ignored."""
    try:
        doc = _typed(json.loads(content), dict, "the answer")
    except json.JSONDecodeError as exc:
        raise _NotAnAnswer(str(exc)) from None
    results = []
    for item in _typed(doc.get("results"), list, "results"):
        _typed(item, dict, "a result")
        results.append(
            CheckResult(
                recipient=_typed(item.get("recipient"), str, "recipient"),
                allowed=_typed(item.get("allowed"), bool, "allowed"),
                basis=_optional_str(item, "basis"),
                reason=_optional_str(item, "reason"),
                unsubscribe_url=_optional_str(item, "unsubscribe_url"),
                list_unsubscribe=_optional_str(item, "list_unsubscribe"),
                list_unsubscribe_post=_optional_str(item, "list_unsubscribe_post"),
            )
        )
    summary = _typed(doc.get("summary"), dict, "summary")
    return CheckResponse(
        results=results,
        summary=CheckSummary(
            allowed=_typed(summary.get("allowed", 0), int, "summary.allowed"),
            denied=_typed(summary.get("denied", 0), int, "summary.denied"),
            reasons=_counts(summary.get("reasons", {}), "summary.reasons"),
            bases=_counts(summary.get("bases", {}), "summary.bases"),
        ),
    )


# -- errors ------------------------------------------------------------------------------------


class ClientError(Exception):
    """Something went wrong talking to the suppress API."""


class ConnectionFailed(ClientError):
    """The API could not be reached (or the connection broke); the request may not have arrived."""


class StampError(ValueError):
    """The message cannot carry this result's unsubscribe headers."""


class APIError(ClientError):
    """The API answered with an error (an RFC 9457 problem document)."""

    def __init__(self, status: int, code: str, detail: str, problem: dict[str, Any]) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = problem
        super().__init__(f"{status} {code}: {detail}")


class InvalidRequestError(APIError):
    """400 / 422: the request was malformed or its content not acceptable (see `problem`)."""


class AuthenticationError(APIError):
    """401: the API key is missing, unknown or revoked."""


class PermissionDeniedError(APIError):
    """403: the API key lacks the scope the operation needs."""


class NotFoundError(APIError):
    """404: nothing matches."""


class ConflictError(APIError):
    """409: the request conflicts with the current state."""


class RequestTooLargeError(APIError):
    """413: the request is too large (lower `max_batch`)."""


class RateLimitedError(APIError):
    """429: too many requests."""


class ServiceUnavailableError(APIError):
    """5xx: the service could not do it now; nothing was changed. Retry later."""


_ERRORS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: InvalidRequestError,
    429: RateLimitedError,
}


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    problem: dict[str, Any] = {}
    try:
        decoded = json.loads(response.content)
        if isinstance(decoded, dict):
            problem = decoded
    except ValueError:
        pass
    status = response.status_code
    cls = _ERRORS.get(status) or (ServiceUnavailableError if status >= 500 else APIError)
    code = str(problem.get("code") or f"http_{status}")
    detail = str(problem.get("detail") or response.text[:500] or response.reason_phrase)
    raise cls(status, code, detail, problem)


# -- stamping -------------------------------------------------------------------------------------


class _VerbatimHeader(str):
    """A header value written as it is: the email package would otherwise fold a long
    `<https://...>` into RFC 2047 encoded words, which no mailbox provider reads as a URL."""

    name: str

    def __new__(cls, name: str, value: str) -> _VerbatimHeader:
        _refuse_control_characters(name, value)
        header = super().__new__(cls, value)
        header.name = name
        return header

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _refuse_control_characters(name: str, value: str, *, allowed: str = "") -> None:
    """A header value with a control character (NUL, VT, CR, LF, TAB, ESC, DEL, C1, ...) could
    split or smuggle headers, or be read differently by each mail system on the way."""
    for ch in value:
        if (ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F) and ch not in allowed:
            raise StampError(f"{name} holds the control character U+{ord(ch):04X}")


def _sole_recipient(message: EmailMessage | Message) -> str:
    """The one address the message is for; StampError when it goes to nobody yet, to several
    people, or to anyone by Cc or Bcc (each of them would get the checked recipient's link)."""
    for name, value in message.raw_items():  # as stored: parsing would turn some into spaces
        if name.lower() in ("to", "cc", "bcc"):  # folding (a line break before a blank) is fine
            _refuse_control_characters(name, _FOLD.sub("", str(value)), allowed="\t")
    for name in ("Cc", "Bcc"):
        if any(address for _, address in getaddresses(message.get_all(name, []))):
            raise StampError(f"the message has {name} recipients: each would get this recipient's link")
    values = message.get_all("To", [])
    if not values:
        raise StampError("the message has no To header: set it to the checked recipient before stamping")
    to = [address.strip() for _, address in getaddresses(values)]
    if len(to) != 1 or not to[0]:
        listed = ", ".join(a for a in to if a) or "nobody"
        raise StampError(f"the message must be addressed to exactly one recipient, not {listed}")
    return to[0]


def stamp(
    message: EmailMessage | Message, result: CheckResult, *, check_recipient: bool = True
) -> EmailMessage | Message:
    """Add the result's `List-Unsubscribe` and `List-Unsubscribe-Post` (RFC 8058) to `message`.

    Refuses (StampError) a denied result; a value holding a control character; and — unless
    `check_recipient` is false — a message that is not addressed to exactly the checked recipient:
    one address in To, that recipient, no Cc or Bcc. Anyone else who got the message could use the
    link to unsubscribe the recipient. An allowed result without headers (transactional, SMS)
    leaves the message as it is. Headers already present are replaced. Returns the message.
    """
    if not result.allowed:
        raise StampError(f"refusing to stamp a denied recipient ({result.recipient}: {result.reason})")
    if result.list_unsubscribe is None:
        return message
    unsubscribe = _VerbatimHeader("List-Unsubscribe", result.list_unsubscribe)
    post = _VerbatimHeader("List-Unsubscribe-Post", result.list_unsubscribe_post or ONE_CLICK)
    if check_recipient:
        addressed = _sole_recipient(message)
        if addressed.lower() != result.recipient.strip().lower():
            raise StampError(
                f"the message is addressed to {addressed}, not to the checked recipient {result.recipient}"
            )
    del message["List-Unsubscribe"]
    del message["List-Unsubscribe-Post"]
    message["List-Unsubscribe"] = unsubscribe
    message["List-Unsubscribe-Post"] = post
    return message


# -- clients ---------------------------------------------------------------------------------------


class _Checks:
    """What both clients share: chunking, request bodies, and putting the answers together."""

    def __init__(self, base_url: str, api_key: str, max_batch: int) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {MAX_BATCH}")
        self.base_url = base_url.rstrip("/")
        self.max_batch = max_batch
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    def _chunks(self, recipients: Iterable[str]) -> Iterator[list[str]]:
        if isinstance(recipients, str):
            raise TypeError("recipients must be a list of addresses, not one string")
        iterator = iter(recipients)
        while chunk := list(islice(iterator, self.max_batch)):
            yield chunk

    def _body(self, chunk: list[str], options: dict[str, Any]) -> bytes:
        body = {"recipients": chunk, **{k: v for k, v in options.items() if v is not None}}
        if body.get("offer") == "own":
            del body["offer"]  # the API's default
        return json.dumps(body, ensure_ascii=False).encode()

    def _answer(self, response: httpx.Response, chunk: list[str]) -> CheckResponse:
        _raise_for_problem(response)
        try:
            answer = _parse_answer(response.content)
        except _NotAnAnswer as exc:
            raise ClientError(f"the check answer is not what the API returns: {exc}") from None
        if len(answer.results) != len(chunk):
            raise ClientError(f"{len(answer.results)} results for {len(chunk)} recipients")
        return answer


def _merge(parts: list[CheckResponse]) -> CheckResponse:
    results: list[CheckResult] = []
    reasons: dict[str, int] = {}
    bases: dict[str, int] = {}
    allowed = denied = 0
    for part in parts:
        results.extend(part.results)
        allowed += part.summary.allowed
        denied += part.summary.denied
        for name, n in part.summary.reasons.items():
            reasons[name] = reasons.get(name, 0) + n
        for name, n in part.summary.bases.items():
            bases[name] = bases.get(name, 0) + n
    return CheckResponse(
        results=results, summary=CheckSummary(allowed=allowed, denied=denied, reasons=reasons, bases=bases)
    )


def _options(
    channel: Channel, purpose: Purpose, topic: str | None, offer: Offer, campaign: str | None
) -> dict[str, Any]:
    return {"channel": channel, "purpose": purpose, "topic": topic, "offer": offer, "campaign": campaign}


class SuppressClient(_Checks):
    """The synchronous client (httpx). Use it as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        max_batch: int = MAX_BATCH,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_batch)
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def check(
        self,
        recipients: Iterable[str],
        *,
        channel: Channel,
        purpose: Purpose,
        topic: str | None = None,
        offer: Offer = "own",
        campaign: str | None = None,
    ) -> CheckResponse:
        """Decide every recipient, in requests of at most `max_batch`; results in input order."""
        options = _options(channel, purpose, topic, offer, campaign)
        parts = []
        for chunk in self._chunks(recipients):
            try:
                response = self._http.post(
                    f"{self.base_url}/v1/checks", content=self._body(chunk, options), headers=self._headers
                )
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"cannot reach {self.base_url}: {exc}") from exc
            parts.append(self._answer(response, chunk))
        return _merge(parts)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SuppressClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSuppressClient(_Checks):
    """The asyncio client (httpx). Use it as an async context manager, or await `aclose()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        max_batch: int = MAX_BATCH,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, max_batch)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)

    async def check(
        self,
        recipients: Iterable[str],
        *,
        channel: Channel,
        purpose: Purpose,
        topic: str | None = None,
        offer: Offer = "own",
        campaign: str | None = None,
    ) -> CheckResponse:
        """Decide every recipient, in requests of at most `max_batch`; results in input order."""
        options = _options(channel, purpose, topic, offer, campaign)
        parts = []
        for chunk in self._chunks(recipients):
            try:
                response = await self._http.post(
                    f"{self.base_url}/v1/checks", content=self._body(chunk, options), headers=self._headers
                )
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"cannot reach {self.base_url}: {exc}") from exc
            parts.append(self._answer(response, chunk))
        return _merge(parts)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSuppressClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
