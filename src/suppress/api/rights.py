"""GDPR rights over HTTP: access, erasure, restriction, objection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import Body, FromPath

from suppress.api.auth import requires
from suppress.models import Channel
from suppress.rights import (
    CustomerExport,
    LiftObjectionIn,
    RecipientExport,
    RestrictIn,
    Rights,
    RightsResult,
)
from suppress.tenants import Principal


def _now() -> datetime:
    return datetime.now(UTC)


async def _set_restriction(
    principal: Principal,
    rights: Rights,
    channel: Channel,
    address: str,
    data: RestrictIn | None,
    *,
    restricted: bool,
) -> RightsResult:
    note = data.note if data else None
    return await rights.restrict(principal, channel, address, restricted=restricted, note=note, now=_now())


@get(
    "/v1/recipients/{channel:str}/{address:str}/export",
    summary="GDPR access: everything held about an address",
    tags=["gdpr"],
    description="Current state, consents with their evidence and notice versions, suppressions, "
    "customer links and the full ledger, personal fields included. Needs `read`.",
    guards=[requires("read")],
)
async def export_recipient(
    principal: NamedDependency[Principal],
    rights: NamedDependency[Rights],
    channel: FromPath[Channel],
    address: FromPath[str],
) -> RecipientExport:
    return await rights.export_recipient(principal, channel, address, _now())


@get(
    "/v1/customers/{customer_ref:str}/export",
    summary="GDPR access: a customer and all its addresses",
    tags=["gdpr"],
    description="Needs `read`.",
    guards=[requires("read")],
)
async def export_customer(
    principal: NamedDependency[Principal], rights: NamedDependency[Rights], customer_ref: FromPath[str]
) -> CustomerExport:
    return await rights.export_customer(principal, customer_ref, _now())


@post(
    "/v1/recipients/{channel:str}/{address:str}/erase",
    status_code=200,
    tags=["gdpr"],
    summary="GDPR erasure: personal data gone, hashed suppression kept",
    description="Removes the address, evidence (IP, user agent, texts, notes) and customer links from every "
    "table, including inside ledger events (whose hashes stay, so the chain still verifies), and keeps "
    "the keyed hash with an `erased` suppression: any spelling of the address is denied from now on, "
    "and a later consent is refused until an admin lifts the erasure with a reason. Needs `admin`.",
    guards=[requires("admin")],
)
async def erase_recipient(
    principal: NamedDependency[Principal],
    rights: NamedDependency[Rights],
    channel: FromPath[Channel],
    address: FromPath[str],
) -> RightsResult:
    return await rights.erase_recipient(principal, channel, address, _now())


@post(
    "/v1/customers/{customer_ref:str}/erase",
    status_code=200,
    tags=["gdpr"],
    summary="GDPR erasure of a customer: every address, then the customer record",
    description="Needs `admin`.",
    guards=[requires("admin")],
)
async def erase_customer(
    principal: NamedDependency[Principal], rights: NamedDependency[Rights], customer_ref: FromPath[str]
) -> RightsResult:
    return await rights.erase_customer(principal, customer_ref, _now())


@post(
    "/v1/recipients/{channel:str}/{address:str}/restrict",
    status_code=200,
    tags=["gdpr"],
    summary="GDPR Art. 18: restrict processing (every send denied `restricted`)",
    description="Needs `write`.",
    guards=[requires("write")],
)
async def restrict(
    principal: NamedDependency[Principal],
    rights: NamedDependency[Rights],
    channel: FromPath[Channel],
    address: FromPath[str],
    data: Annotated[RestrictIn | None, Body()] = None,
) -> RightsResult:
    return await _set_restriction(principal, rights, channel, address, data, restricted=True)


@post(
    "/v1/recipients/{channel:str}/{address:str}/unrestrict",
    status_code=200,
    tags=["gdpr"],
    summary="Lift a restriction",
    description="Needs `write`.",
    guards=[requires("write")],
)
async def unrestrict(
    principal: NamedDependency[Principal],
    rights: NamedDependency[Rights],
    channel: FromPath[Channel],
    address: FromPath[str],
    data: Annotated[RestrictIn | None, Body()] = None,
) -> RightsResult:
    return await _set_restriction(principal, rights, channel, address, data, restricted=False)


@post(
    "/v1/customers/{customer_ref:str}/object",
    status_code=200,
    tags=["gdpr"],
    summary="GDPR Art. 21: objection to direct marketing",
    description="Records the objection on the customer: every address linked to it — now, and any "
    "linked later by a purchase, an agreement or an import — is denied `objected` for marketing on every "
    "channel, topic and offer (transactional messages are not direct marketing and still go). One "
    "`objected` ledger event per address linked now. Only the person's own consent given afterwards "
    "(for that consent's scope) or an admin's lift with a note "
    "(`POST /v1/customers/{customer_ref}/objection/lift`) ends it. Needs `write`.",
    guards=[requires("write")],
)
async def object_to_marketing(
    principal: NamedDependency[Principal], rights: NamedDependency[Rights], customer_ref: FromPath[str]
) -> RightsResult:
    return await rights.object(principal, customer_ref, _now())


@post(
    "/v1/customers/{customer_ref:str}/objection/lift",
    status_code=200,
    tags=["gdpr"],
    summary="Lift a customer's objection to direct marketing (admin, with a note)",
    description="Ends an objection recorded with `POST /v1/customers/{customer_ref}/object`, e.g. on the "
    "person's written request. `note` (required) says why; it is kept with one `objection_lifted` ledger "
    "event per linked address. Consents given before the objection count again (if still valid), and "
    "so does the customer relationship. `changed: false` when the customer had not objected. Needs "
    "`admin`.",
    guards=[requires("admin")],
)
async def lift_objection(
    principal: NamedDependency[Principal],
    rights: NamedDependency[Rights],
    customer_ref: FromPath[str],
    data: Annotated[LiftObjectionIn, Body()],
) -> RightsResult:
    return await rights.lift_objection(principal, customer_ref, data.note, _now())


routes = [
    export_recipient,
    export_customer,
    erase_recipient,
    erase_customer,
    restrict,
    unrestrict,
    object_to_marketing,
    lift_objection,
]
