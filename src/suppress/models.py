"""The service's vocabularies and the value aliases shared by every layer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, get_args

from msgspec import Meta

Channel = Literal["email", "sms"]
Purpose = Literal["marketing", "transactional"]
Offer = Literal["own", "partner"]
Basis = Literal["consent", "customer_relationship", "transactional"]
# Reasons a suppression row can carry; `erased` is set only by erasure, never by POST /v1/suppressions.
SuppressionReason = Literal["unsubscribed", "complained", "hard_bounced", "soft_bounced", "manual"]
# What DELETE /v1/suppressions can lift: any reason, including an erasure (admin, with a note).
LiftableReason = Literal[SuppressionReason, "erased"]
# Why a check denies a recipient, in the order reports list them.
# `objected`: the customer objected to direct marketing (GDPR Art. 21), on every linked address.
Reason = Literal["invalid_address", SuppressionReason, "erased", "restricted", "objected", "no_basis"]
Scope = Literal["check", "write", "read", "admin"]
CustomerEvent = Literal["purchase", "agreement_started", "agreement_ended"]

CHANNELS: tuple[str, ...] = get_args(Channel)
SCOPES: tuple[str, ...] = get_args(Scope)
SUPPRESSION_REASONS: tuple[str, ...] = get_args(SuppressionReason)
REASONS: tuple[Reason, ...] = get_args(Reason)
# Lifting these needs the admin scope: a complaint or an erasure is the person's strongest "no".
ADMIN_ONLY_LIFT: frozenset[str] = frozenset({"complained", "erased"})

AwareDatetime = Annotated[datetime, Meta(tz=True)]
RawAddress = Annotated[str, Meta(min_length=1, max_length=512)]
# The description is the rule in words: validation errors quote it (api/validation.py).
TopicName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="a topic name: a letter or digit first, then letters, digits, `_`, `.` or `-`, "
        "at most 100 characters",
    ),
]
CampaignName = Annotated[str, Meta(min_length=1, max_length=200)]
CustomerRef = Annotated[str, Meta(min_length=1, max_length=200)]
ShortText = Annotated[str, Meta(max_length=2000)]
