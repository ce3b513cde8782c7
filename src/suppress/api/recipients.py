"""The write API (topics, suppressions, consents, customer events) and the recipient read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from suppress.api.auth import requires
from suppress.checks import CheckService
from suppress.consents import ConsentIn, ConsentWithdrawIn
from suppress.customers import CustomerEventIn, CustomerResult
from suppress.models import Channel, LiftableReason, SuppressionReason, TopicName
from suppress.recipients import Recipients, RecipientView
from suppress.suppressions import LiftResult, SuppressionIn, SuppressionPage
from suppress.tenants import Principal
from suppress.topics import Topic, TopicIn
from suppress.writing import WriteResult


def _now() -> datetime:
    return datetime.now(UTC)


@post(
    "/v1/topics",
    summary="Create a topic or change its soft opt-in flag",
    tags=["topics"],
    description="201 when created, 200 when it existed. `soft_opt_in` says whether an active customer "
    "relationship is a sufficient basis for this topic. `display` gives the label and short description "
    "the recipient's pages show, per language (`nb`, `en`); left out on an update, the texts stay. "
    "Needs `write`.",
    guards=[requires("write")],
    status_code=201,
    responses={200: ResponseSpec(Topic, description="The topic existed (its flag is updated).")},
)
async def save_topic(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    recipients: NamedDependency[Recipients],
    data: JSONBody[TopicIn],
) -> Response[Topic]:
    topic, created = await recipients.save_topic(principal, data)
    checks: CheckService = request.app.state.checks
    checks.forget_tenant(principal.tenant_id)  # its checks see the new soft opt-in flag at once
    return Response(topic, status_code=201 if created else 200)


@get("/v1/topics", summary="List the tenant's topics", tags=["topics"], guards=[requires("read")])
async def list_topics(
    principal: NamedDependency[Principal], recipients: NamedDependency[Recipients]
) -> list[Topic]:
    return await recipients.list_topics(principal)


@post(
    "/v1/suppressions",
    status_code=201,
    summary="Suppress an address",
    tags=["suppressions"],
    description="Global (all topics of the channel) unless `topic` is given, which only `unsubscribed` "
    "may be. `soft_bounced` without `expires_at` lasts the tenant's soft-bounce period; `manual` and "
    "`hard_bounced` may carry an expiry; `unsubscribed` and `complained` never expire (422 with "
    "`expires_at`). An `unsubscribed` suppression also ends the matching consents. Needs `write`.",
    guards=[requires("write")],
)
async def add_suppression(
    principal: NamedDependency[Principal],
    recipients: NamedDependency[Recipients],
    data: JSONBody[SuppressionIn],
) -> WriteResult:
    return await recipients.suppress(principal, data, _now())


@delete(
    "/v1/suppressions/{channel:str}/{address:str}",
    status_code=200,
    summary="Lift suppressions",
    tags=["suppressions"],
    description="Lifts every suppression at the scope (all topics, or `topic`), or only `reason`. "
    "Lifting `complained` or `erased` needs the admin scope; otherwise `write`.",
    guards=[requires("write")],
)
async def lift_suppression(
    principal: NamedDependency[Principal],
    recipients: NamedDependency[Recipients],
    channel: FromPath[Channel],
    address: FromPath[str],
    topic: FromQuery[TopicName | None] = None,
    reason: FromQuery[LiftableReason | None] = None,
    note: Annotated[str | None, QueryParameter(max_length=2000)] = None,
) -> LiftResult:
    return await recipients.lift(principal, channel, address, topic, reason, _now(), note=note)


@get(
    "/v1/suppressions",
    summary="List suppressions, oldest first, with cursor pagination",
    tags=["suppressions"],
    guards=[requires("read")],
)
async def list_suppressions(
    principal: NamedDependency[Principal],
    recipients: NamedDependency[Recipients],
    channel: FromQuery[Channel | None] = None,
    reason: FromQuery[SuppressionReason | None] = None,
    since: FromQuery[datetime | None] = None,
    cursor: Annotated[str | None, QueryParameter(max_length=400)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> SuppressionPage:
    return await recipients.list_suppressions(
        principal,
        channel=channel,
        reason=reason,
        since=since,
        cursor=cursor,
        limit=limit,
        now=_now(),
    )


@post(
    "/v1/consents",
    status_code=201,
    summary="Record a consent with its evidence",
    tags=["consents"],
    description="All topics unless `topic` is given; `partners: true` also covers partner offers. A "
    "consent given after an `unsubscribed` suppression of the same scope lifts it (a person-initiated "
    "re-opt-in); it never lifts complaints, bounces or erasure. Needs `write`.",
    guards=[requires("write")],
)
async def give_consent(
    principal: NamedDependency[Principal], recipients: NamedDependency[Recipients], data: JSONBody[ConsentIn]
) -> WriteResult:
    return await recipients.give_consent(principal, data, _now())


@post(
    "/v1/consents/withdraw",
    status_code=200,
    summary="Withdraw consent (an unsubscribe)",
    tags=["consents"],
    description="Ends the matching consents and suppresses the scope as `unsubscribed`, so a customer "
    "relationship no longer counts either. Needs `write`.",
    guards=[requires("write")],
)
async def withdraw_consent(
    principal: NamedDependency[Principal],
    recipients: NamedDependency[Recipients],
    data: JSONBody[ConsentWithdrawIn],
) -> WriteResult:
    return await recipients.withdraw_consent(principal, data, _now())


@post(
    "/v1/customers",
    status_code=200,
    summary="Record a purchase or an agreement change",
    tags=["customers"],
    description="Links the addresses to the customer (`collected_in_sale` marks an address obtained in "
    "a sale, the condition for soft opt-in) and updates the relationship of every address of the "
    "customer. Needs `write`.",
    guards=[requires("write")],
)
async def customer_event(
    principal: NamedDependency[Principal],
    recipients: NamedDependency[Recipients],
    data: JSONBody[CustomerEventIn],
) -> CustomerResult:
    return await recipients.customer_event(principal, data, _now())


@get(
    "/v1/recipients/{channel:str}/{address:str}",
    summary="Why a recipient is allowed or not",
    tags=["recipients"],
    description="The current state, the marketing decision for each topic, current consents, "
    "suppressions and customer links, and the ledger events behind them. Needs `read`.",
    guards=[requires("read")],
)
async def get_recipient(
    principal: NamedDependency[Principal],
    recipients: NamedDependency[Recipients],
    channel: FromPath[Channel],
    address: FromPath[str],
    events: Annotated[int, QueryParameter(ge=0, le=10_000)] = 1000,
) -> RecipientView:
    return await recipients.explain(principal, channel, address, _now(), events=events)


routes = [
    save_topic,
    list_topics,
    add_suppression,
    lift_suppression,
    list_suppressions,
    give_consent,
    withdraw_consent,
    customer_event,
    get_recipient,
]
