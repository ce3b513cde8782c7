"""The providers' own suppression exports: their columns, which list a file is, and our reasons.

SendGrid (bounces, invalid emails, spam reports, global and group unsubscribes), Mailgun (bounces,
unsubscribes, complaints) and the Amazon SES account-level suppression list; the layouts and what
was assumed about them are in docs/imports.md.
"""

from __future__ import annotations

from typing import Any

from suppress.imports.records import (
    MAX_FIELD,
    FormatError,
    ImportOptions,
    Record,
    RowError,
    SuppressionRecord,
    required_field,
    text_field,
    time_field,
)

PROVIDER_FIELDS: dict[str, dict[str, str]] = {
    "sendgrid": {
        **{n: "email" for n in ("email", "email_address", "address")},
        **{n: "created" for n in ("created", "created_at", "date")},
        "reason": "reason",
        "status": "status",
        "ip": "ip",
    },
    "mailgun": {
        **{n: "address" for n in ("address", "email")},
        **{n: "created_at" for n in ("created_at", "created")},
        "code": "code",
        "error": "error",
        **{n: "tags" for n in ("tags", "tag")},
    },
    "ses": {
        **{n: "email" for n in ("emailaddress", "email_address", "email", "address")},
        "reason": "reason",
        **{n: "at" for n in ("lastupdatetime", "last_update_time", "created", "date")},
    },
}
SES_POSITIONAL = ["email", "reason", "at"]


def infer_list(fmt: str, columns: set[str]) -> str:
    """Which of a provider's suppression lists a CSV export comes from, by its columns."""
    if fmt == "sendgrid":
        if "status" in columns:
            return "bounces"
        if "ip" in columns:
            return "spam_reports"
        if "reason" in columns:
            return "invalid_emails"
        raise FormatError(
            "a SendGrid export with only email and created columns may hold global unsubscribes, "
            "group unsubscribes or spam reports: say which with list=unsubscribes, "
            "list=group_unsubscribes or list=spam_reports"
        )
    if fmt == "mailgun":
        if columns & {"code", "error"}:
            return "bounces"
        if "tags" in columns:
            return "unsubscribes"
        raise FormatError(
            "a Mailgun export with only address and created_at columns may hold complaints or "
            "unsubscribes: say which with list=complaints or list=unsubscribes"
        )
    return ""


def provider_record(fmt: str, plist: str, fields: dict[str, Any], options: ImportOptions) -> Record:
    """A suppression from one row of a provider's export (field names already mapped)."""
    evidence: dict[str, Any] = {"provider": fmt}
    if fmt == "sendgrid":
        address = required_field(fields, "email", 512)
        at = time_field(fields, "created")
        evidence["list"] = plist
        status = text_field(fields.get("status"), "status", 40)
        detail = text_field(fields.get("reason"), "reason", MAX_FIELD)
        if status:
            evidence["status"] = status
        if detail:
            evidence["detail"] = detail[:500]
        if plist in ("bounces", "invalid_emails"):
            reason = "soft_bounced" if status and status.startswith("4") else "hard_bounced"
        elif plist == "spam_reports":
            reason = "complained"
            ip = text_field(fields.get("ip"), "ip", 60)
            if ip:
                evidence["ip"] = ip
        else:
            reason = "unsubscribed"
        topic = options.topic if reason == "unsubscribed" else None
        return SuppressionRecord(
            channel="email", address=address, reason=reason, topic=topic, at=at, evidence=evidence
        )
    if fmt == "mailgun":
        address = required_field(fields, "address", 512)
        at = time_field(fields, "created_at")
        evidence["list"] = plist
        tags: tuple[str, ...] | None = None
        if plist == "bounces":
            code = text_field(fields.get("code"), "code", 20)
            error = text_field(fields.get("error"), "error", MAX_FIELD)
            if code:
                evidence["code"] = code
            if error:
                evidence["detail"] = error[:500]
            reason = "soft_bounced" if code and code.startswith("4") else "hard_bounced"
        elif plist == "complaints":
            reason = "complained"
        else:
            reason = "unsubscribed"
            raw_tags = fields.get("tags")
            items = raw_tags if isinstance(raw_tags, list) else [raw_tags] if raw_tags else []
            tags = tuple(sorted({str(t).strip() for t in items if t is not None and str(t).strip()}))
            if tags:
                evidence["tags"] = list(tags)
        return SuppressionRecord(
            channel="email",
            address=address,
            reason=reason,
            topic=options.topic if reason == "unsubscribed" else None,
            tags=tags or None,
            at=at,
            evidence=evidence,
        )
    address = required_field(fields, "email", 512)
    ses_reason = required_field(fields, "reason", 40).upper()
    if ses_reason not in ("BOUNCE", "COMPLAINT"):
        raise RowError(f"reason must be BOUNCE or COMPLAINT, not {ses_reason[:40]!r}")
    evidence["reason"] = ses_reason
    return SuppressionRecord(
        channel="email",
        address=address,
        reason="hard_bounced" if ses_reason == "BOUNCE" else "complained",
        at=time_field(fields, "at"),
        evidence=evidence,
    )
