"""The recipient's endpoints: GET /u/{token} (page; never changes state) and POST /u/{token}
(RFC 8058 one-click, and the page's own forms)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, Response, post, route
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency
from litestar.enums import HttpMethod, MediaType
from litestar.openapi.spec import OpenAPIType, Schema
from litestar.params import FromPath, QueryParameter

from suppress.api.contract import documented
from suppress.api.pages import (
    SECURITY_HEADERS,
    Message,
    channel_word,
    confirmation_page,
    message_page,
    pick_language,
    recipient_page,
)
from suppress.errors import SuppressError
from suppress.policy import ALL_TOPICS
from suppress.preferences import Language, PageState
from suppress.tokens import TokenClaims
from suppress.unsubscribe import (
    BadToken,
    ChoiceRefused,
    Evidence,
    NoticeChanged,
    Unsubscriber,
)

ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"
# Every field the page's forms send (`scope` came with an older undo form; it is ignored). Anything
# else — a channel, an offer, partners — is not a choice this page offers: refused, nothing changed.
OUTCOME_KEYS = {"applied": "done", "already": "already", "spooled": "spooled"}
FORM_FIELDS = frozenset({ONE_CLICK_FIELD, "action", "lang", "topic", "event", "notice_version", "scope"})
_TEXT = Schema(type=OpenAPIType.STRING)
_FORM = Schema(
    type=OpenAPIType.OBJECT,
    properties={
        ONE_CLICK_FIELD: Schema(type=OpenAPIType.STRING, enum=[ONE_CLICK_VALUE]),
        "action": Schema(type=OpenAPIType.STRING, enum=["topic", "all", "undo", "preferences"]),
        "scope": Schema(type=OpenAPIType.STRING, enum=["topic", "all"]),
        "topic": Schema(type=OpenAPIType.ARRAY, items=_TEXT),
        "lang": Schema(type=OpenAPIType.STRING, enum=["nb", "en"]),
        "event": Schema(type=OpenAPIType.STRING, description="the unsubscribe event an undo reverses"),
        "notice_version": Schema(type=OpenAPIType.STRING, description="the consent notice shown"),
    },
)


# A 503 page (neither store could take the request) asks the browser to come back this much later.
RETRY_AFTER_SECONDS = 5


def _html(content: str, status: int = 200) -> Response[str]:
    headers = (
        {**SECURITY_HEADERS, "Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else SECURITY_HEADERS
    )
    return Response(content, status_code=status, media_type=MediaType.HTML, headers=headers)


def _evidence(request: Request[Any, Any, Any]) -> Evidence:
    return Evidence(
        ip=request.client.host if request.client else None, user_agent=request.headers.get("user-agent")
    )


@route(
    "/u/{token:str}",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    summary="Unsubscribe and preference page (HTML); never changes anything",
    tags=["unsubscribe"],
    security=[{}],
    media_type=MediaType.HTML,
    opt=documented(media_types={400: [MediaType.HTML]}),
)
async def show_page(
    request: Request[Any, Any, Any],
    unsubscriber: NamedDependency[Unsubscriber],
    token: FromPath[str],
    lang: Annotated[
        str | None, QueryParameter(description="`nb` or `en`; otherwise `Accept-Language` decides")
    ] = None,
) -> Response[str]:
    language = pick_language(request.headers.get("accept-language"), lang)
    try:
        claims = unsubscriber.verify(token)
    except BadToken:
        return _html(message_page(language, "bad_title", "bad"), 400)
    state = await unsubscriber.page_state(claims, datetime.now(UTC))
    return _html(recipient_page(language, state))


@post(
    "/u/{token:str}",
    status_code=200,
    summary="One-click unsubscribe (RFC 8058) and the page's forms",
    description=(
        "With the body `List-Unsubscribe=One-Click` (form-urlencoded or multipart) the recipient is "
        "unsubscribed from the token's topic, or from all marketing on the channel when the token has "
        "none: no cookie, no auth, no redirect; the suppression is durable and effective before the 200. "
        "The page's forms post `action` = `topic` | `all` | `undo` (+ `event`, the unsubscribe made "
        "through this link to reverse: exactly the state it replaced comes back, no consent is given) | "
        "`preferences` (+ `topic` for each topic to receive: an allowed topic left out is an opt-out; a "
        "topic ticked that has no basis is a consent only where the tenant's consent notice was shown, "
        "with `notice_version`). Any other field, or a topic the page did not offer, is a 400 and "
        "changes nothing; a notice that changed since the page was shown is a 409. Repeats are no-ops."
    ),
    tags=["unsubscribe"],
    security=[{}],
    media_type=MediaType.HTML,
    # The form is read by the handler itself; the page's own errors are pages too.
    opt=documented(
        body={"application/x-www-form-urlencoded": _FORM, "multipart/form-data": _FORM},
        media_types={s: [MediaType.HTML] for s in (400, 404, 409, 422, 503)},
    ),
)
async def submit(
    request: Request[Any, Any, Any], unsubscriber: NamedDependency[Unsubscriber], token: FromPath[str]
) -> Response[str]:
    form = await request.form()
    lang = pick_language(
        request.headers.get("accept-language"), form.get("lang") or request.query_params.get("lang")
    )
    try:
        claims = unsubscriber.verify(token)
    except BadToken:
        return _html(message_page(lang, "bad_title", "bad"), 400)
    now = datetime.now(UTC)
    evidence = _evidence(request)
    try:
        if form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE:
            outcome = await unsubscriber.unsubscribe(
                claims, topic_id=claims.topic_id or ALL_TOPICS, source="one_click", evidence=evidence, now=now
            )
            # mail clients show no answer: a short one, without reading the recipient's state again
            return _html(confirmation_page(lang, Message(OUTCOME_KEYS[outcome.status])))
        if set(form.keys()) - FORM_FIELDS:
            raise ChoiceRefused()
        done = await _act(unsubscriber, claims, form, lang, evidence, now)
    except SuppressError as exc:
        if exc.status >= 500:
            return _html(message_page(lang, "title", "error"), exc.status)
        key = "notice_changed" if isinstance(exc, NoticeChanged) else "refused"
        state = await unsubscriber.page_state(claims, now)
        return _html(recipient_page(lang, state, Message(key, problem=True)), exc.status)
    if done is None:
        return _html(message_page(lang, "title", "error"), 400)
    # the page after an action: what it did, then the state it left and the ways to change it
    if done.key == "spooled":  # the database is not answering: do not wait for it a second time
        state = PageState(available=False, channel=claims.channel)
    else:
        state = await unsubscriber.page_state(claims, datetime.now(UTC))
    return _html(recipient_page(lang, state, done.message(lang, state)))


class Done:
    """What an action did, for the status line: a key of the page's texts and the topic it concerns."""

    def __init__(self, key: str, topic_id: int = ALL_TOPICS) -> None:
        self.key, self.topic_id = key, topic_id

    def message(self, lang: Language, state: PageState) -> Message:
        if self.key not in ("done", "already"):
            return Message(self.key)
        topic = state.topic(self.topic_id) if self.topic_id != ALL_TOPICS else None
        if topic is not None:
            return Message(f"{self.key}_topic", topic=topic.label(lang))
        channel = channel_word(lang, state.channel)
        return Message(f"{self.key}_all", channel=channel, sender=state.sender or "")


async def _act(
    service: Unsubscriber,
    claims: TokenClaims,
    form: FormMultiDict,
    lang: Language,
    evidence: Evidence,
    now: datetime,
) -> Done | None:
    """Carry out one of the page's forms; says what it did (None: no such form)."""
    action = form.get("action")
    if action in ("topic", "all"):
        topic_id = ALL_TOPICS if action == "all" else claims.topic_id or ALL_TOPICS
        outcome = await service.unsubscribe(
            claims, topic_id=topic_id, source="page", evidence=evidence, now=now
        )
        return Done(OUTCOME_KEYS[outcome.status], topic_id)
    if action == "undo":
        raw = form.get("event")
        if raw is not None and not str(raw).isdigit():
            raise ChoiceRefused()
        if raw is None:  # a form without the unsubscribe it reverses has nothing to reverse
            return Done("nothing_to_undo")
        result = await service.undo(claims, event_id=int(raw), evidence=evidence, now=now)
        return Done("undone" if result.status == "undone" else "nothing_to_undo")
    if action == "preferences":
        await _save_preferences(service, claims, form, lang, evidence, now)
        return Done("saved")
    return None


async def _save_preferences(
    service: Unsubscriber,
    claims: TokenClaims,
    form: FormMultiDict,
    lang: Language,
    evidence: Evidence,
    now: datetime,
) -> None:
    """The ticked topics are what the person wants to receive. An allowed topic left unticked is an
    opt-out; a ticked topic without a basis is a consent, only where the page offered it (the tenant's
    notice shown, in this language, with this version). Checked in full before anything is written."""
    state = await service.page_state(claims, now)
    if not state.available:
        raise ChoiceRefused()
    wanted = {str(v) for v in form.getall("topic", [])}
    by_name = {topic.name: topic for topic in state.topics}
    if wanted - by_name.keys():
        raise ChoiceRefused()
    opt_outs = [t.id for t in state.topics if t.allowed and t.name not in wanted]
    opt_ins = [t for t in state.topics if not t.allowed and t.name in wanted]
    if any(not t.can_opt_in for t in opt_ins):
        raise ChoiceRefused()
    notice = getattr(state.notice, lang) if state.notice is not None else None
    if opt_ins and (notice is None or form.get("notice_version") != notice.version):
        raise NoticeChanged()
    for topic_id in opt_outs:
        await service.unsubscribe(claims, topic_id=topic_id, source="page", evidence=evidence, now=now)
    if opt_ins:
        assert notice is not None
        await service.opt_in(
            claims, topic_ids=[t.id for t in opt_ins], notice=notice, lang=lang, evidence=evidence, now=now
        )


routes = [show_page, submit]
