"""The SMS reply job: hands a keyword's confirmation to the configured `SmsSender`."""

from __future__ import annotations

import logging
from typing import Any

from suppress import queue
from suppress.config import Settings
from suppress.sms import SmsMessage, SmsRejected, SmsSender, SmsUnavailable, build_sms_sender, mask_number

log = logging.getLogger(__name__)

# With queue.retry_later's `defer = try * 5 s` (capped at 60 s), eight tries end about two and a
# half minutes after the first: the confirmation is due within five minutes (POLICY.md U2).
MAX_TRIES = 8
# A job id is remembered this long after the job ends, so a repeated enqueue sends nothing.
KEEP_RESULT_SECONDS = 24 * 3600


def open_sms_sender(ctx: dict[str, Any], settings: Settings) -> None:
    """Put the configured sender into ctx (unless the caller brought one)."""
    if ctx.get("sms_sender") is None:
        ctx["sms_sender"] = build_sms_sender(settings)


async def close_sms_sender(ctx: dict[str, Any]) -> None:
    """Close what `open_sms_sender` opened."""
    sender: SmsSender | None = ctx.get("sms_sender")
    if sender is not None:
        await sender.aclose()


async def send_sms_reply(
    ctx: dict[str, Any], tenant_id: int, to: str, sender_id: str, text: str, idempotency_key: str
) -> str:
    """Send one reply; a transient failure retries, a refusal fails the job for good."""
    sender: SmsSender = ctx["sms_sender"]
    message = SmsMessage(to=str(to), sender=sender_id, text=text, idempotency_key=idempotency_key)
    try:
        await sender.send(message)
    except SmsUnavailable as exc:
        what = f"SMS reply {idempotency_key} to {mask_number(str(to))} not sent yet"
        raise queue.retry_later(ctx, what, exc) from None
    except SmsRejected as exc:
        log.error(
            "SMS reply %s to %s refused (tenant %s): %s",
            idempotency_key,
            mask_number(str(to)),
            tenant_id,
            exc,
        )
        raise
    return "sent"
