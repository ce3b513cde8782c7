"""The evidence ledger over HTTP: a tenant fetches its checkpoints to keep them out of our reach."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.params import QueryParameter

from suppress.api.auth import caller
from suppress.ledger import CheckpointPage, list_checkpoints


@get(
    "/v1/ledger/checkpoints",
    summary="The tenant's ledger checkpoints, oldest first",
    tags=["ledger"],
    description="Each checkpoint seals a batch of the tenant's events: a Merkle tree root (RFC 9162) over "
    "their canonical lines, the hash of the previous checkpoint, and the service's MAC. Keep them: an "
    "access export's inclusion proofs verify against them, and `suppress ledger verify --checkpoints` "
    "checks the whole ledger against them (docs/ledger.md). Page with `after` = the last `seq` seen "
    "(`next_after`). Needs `read`.",
)
async def checkpoints(
    request: Request[Any, Any, Any],
    after: Annotated[int, QueryParameter(ge=0, le=2**62)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> CheckpointPage:
    principal = await caller(request, "read")
    return await list_checkpoints(
        request.app.state.pool, request.app.state.queries, principal.tenant_id, after, limit
    )


routes = [checkpoints]
