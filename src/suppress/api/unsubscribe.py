"""The recipient's endpoints: GET /u/{token} (page; never changes state) and POST /u/{token}
(RFC 8058 one-click, and the page's own forms)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response, post, route
from litestar.di import NamedDependency
from litestar.enums import HttpMethod, MediaType
from litestar.params import FromPath

from suppress.api.pages import (
    SECURITY_HEADERS,
    Language,
    confirmation_page,
    message_page,
    pick_language,
    unsubscribe_page,
)
from suppress.errors import SuppressError
from suppress.policy import ALL_TOPICS
from suppress.tokens import TokenClaims
from suppress.unsubscribe import BadToken, Evidence, Outcome, Unsubscriber

ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"


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
    security=[],
)
async def show_page(
    request: Request[Any, Any, Any], unsubscriber: NamedDependency[Unsubscriber], token: FromPath[str]
) -> Response[str]:
    lang = pick_language(request.headers.get("accept-language"))
    try:
        claims = unsubscriber.verify(token)
    except BadToken:
        return _html(message_page(lang, "bad_title", "bad"), 400)
    state = await unsubscriber.page_state(claims, datetime.now(UTC))
    return _html(unsubscribe_page(lang, claims.channel, state))


@post(
    "/u/{token:str}",
    status_code=200,
    summary="One-click unsubscribe (RFC 8058) and the page's forms",
    description=(
        "With the body `List-Unsubscribe=One-Click` (form-urlencoded or multipart) the recipient is "
        "unsubscribed from the token's topic, or from all marketing on the channel when the token has "
        "none: no cookie, no auth, no redirect; the suppression is durable and effective before the 200. "
        "The page's forms post `action` = `topic` | `all` | `undo` (+ `scope`) | `preferences` (+ `topic` "
        "for each topic to keep). Repeats are no-ops."
    ),
    tags=["unsubscribe"],
    security=[],
)
async def submit(
    request: Request[Any, Any, Any], unsubscriber: NamedDependency[Unsubscriber], token: FromPath[str]
) -> Response[str]:
    form = await request.form()
    lang: Language = (
        "nb" if form.get("lang") == "nb" else pick_language(request.headers.get("accept-language"))
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
            return _html(
                await _outcome_page(unsubscriber, lang, outcome, claims, all_topics=claims.topic_id is None)
            )
        action = form.get("action")
        if action in ("topic", "all"):
            topic_id = ALL_TOPICS if action == "all" else claims.topic_id or ALL_TOPICS
            outcome = await unsubscriber.unsubscribe(
                claims, topic_id=topic_id, source="page", evidence=evidence, now=now
            )
            return _html(
                await _outcome_page(unsubscriber, lang, outcome, claims, all_topics=topic_id == ALL_TOPICS)
            )
        if action == "undo":
            topic_id = (claims.topic_id or ALL_TOPICS) if form.get("scope") == "topic" else ALL_TOPICS
            await unsubscriber.resubscribe(
                claims, topic_id=topic_id, source="unsubscribe_undo", evidence=evidence, now=now
            )
            return _html(confirmation_page(lang, "resubscribed"))
        if action == "preferences":
            await _save_preferences(unsubscriber, claims, set(form.getall("topic", [])), evidence, now)
            return _html(confirmation_page(lang, "done_saved"))
    except SuppressError as exc:
        return _html(message_page(lang, "bad_title" if exc.status < 500 else "title", "error"), exc.status)
    return _html(message_page(lang, "title", "error"), 400)


async def _outcome_page(
    service: Unsubscriber, lang: Language, outcome: Outcome, claims: TokenClaims, *, all_topics: bool
) -> str:
    if outcome.status == "spooled":
        return confirmation_page(lang, "spooled")
    scope = "all" if all_topics else "topic"
    if outcome.status == "already":
        return confirmation_page(lang, "already", undo_scope=scope)
    topic = None if all_topics else await service.topic_name(claims)
    if topic:
        return confirmation_page(lang, "done_topic", topic=topic, undo_scope=scope)
    return confirmation_page(lang, "done", undo_scope=scope)


async def _save_preferences(
    service: Unsubscriber, claims: TokenClaims, keep: set[str], evidence: Evidence, now: datetime
) -> None:
    """Unsubscribe from each topic left unticked; a ticked topic that was unsubscribed is a re-opt-in."""
    state = await service.page_state(claims, now)
    for topic in state.topics:
        if topic.name in keep and topic.unsubscribed and not state.unsubscribed_all:
            await service.resubscribe(
                claims, topic_id=topic.id, source="preference_page", evidence=evidence, now=now
            )
        elif topic.name not in keep and not topic.unsubscribed:
            await service.unsubscribe(claims, topic_id=topic.id, source="page", evidence=evidence, now=now)


routes = [show_page, submit]
