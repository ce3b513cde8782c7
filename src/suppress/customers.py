"""Customer relationships: purchase and agreement events that link a customer's addresses."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from suppress import metrics
from suppress.errors import InvalidInput
from suppress.intents import CustomerIntent, RuleBroken, not_in_future
from suppress.models import AwareDatetime, Channel, CustomerEvent, CustomerRef, RawAddress
from suppress.tenants import Principal
from suppress.writing import Inbound, WriteCore


class CustomerAddressIn(Inbound, frozen=True):
    channel: Channel
    address: RawAddress
    collected_in_sale: bool


class CustomerEventIn(Inbound, frozen=True):
    customer_ref: CustomerRef
    addresses: Annotated[list[CustomerAddressIn], Meta(min_length=1, max_length=50)]
    event: CustomerEvent
    at: AwareDatetime | None = None


class CustomerResult(msgspec.Struct, frozen=True, kw_only=True):
    customer_ref: str
    event: str
    agreement_open: bool
    last_purchase_at: datetime | None
    addresses: int


class CustomerWrites(WriteCore):
    """Applying customer events."""

    async def customer_event(
        self, principal: Principal, data: CustomerEventIn, now: datetime
    ) -> CustomerResult:
        """Apply a purchase or agreement event to a customer and every address linked to it."""
        try:
            at = not_in_future(data.at or now, now, "`at`")
        except RuleBroken as exc:
            raise InvalidInput(str(exc)) from None
        linked: dict[tuple[str, bytes], tuple[str, bool]] = {}
        for item in data.addresses:
            normalised, digest = self.key(principal, item.channel, item.address)
            previous = linked.get((item.channel, digest))
            linked[(item.channel, digest)] = (
                normalised,
                item.collected_in_sale or bool(previous and previous[1]),
            )
        intents = [
            CustomerIntent(
                customer_ref=data.customer_ref,
                channel=channel,
                address_hash=digest,
                address=normalised,
                collected_in_sale=collected,
                event=data.event,
                at=at,
                source="api",
                actor=principal.actor,
            )
            for (channel, digest), (normalised, collected) in linked.items()
        ]
        applied = await self.writer.apply(principal.tenant_id, intents)
        metrics.WRITES.labels(f"customer_{data.event}").inc()
        agreement_open, last_purchase_at = applied.customers[data.customer_ref]
        return CustomerResult(
            customer_ref=data.customer_ref,
            event=data.event,
            agreement_open=agreement_open,
            last_purchase_at=last_purchase_at,
            addresses=len(linked),
        )
