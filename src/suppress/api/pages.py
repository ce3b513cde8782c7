"""The recipient-facing HTML: small, fast, no JavaScript, readable on a phone, Norwegian or English."""

from __future__ import annotations

from html import escape
from typing import Literal

from suppress.unsubscribe import PageState

Language = Literal["nb", "en"]

TEXT: dict[Language, dict[str, str]] = {
    "nb": {
        "title": "Avmelding",
        "intro": "E‑post fra {tenant} til {address}.",
        "intro_sms": "SMS fra {tenant} til {address}.",
        "intro_unknown": "Her kan du melde deg av markedsføring.",
        "topic": "Meld meg av «{topic}»",
        "all_email": "Meld meg av all markedsføring på e‑post",
        "all_sms": "Meld meg av all markedsføring på SMS",
        "preferences": "Hva vil du fortsatt få?",
        "save": "Lagre valgene",
        "done": "Du er meldt av.",
        "done_topic": "Du er meldt av «{topic}».",
        "done_saved": "Valgene dine er lagret.",
        "spooled": "Vi har mottatt avmeldingen din. Den blir registrert i løpet av kort tid.",
        "already": "Du var allerede meldt av.",
        "undo_hint": "Trykket du feil?",
        "resubscribe_hint": "Ombestemt deg?",
        "undo": "Meld meg på igjen",
        "resubscribed": "Du er meldt på igjen.",
        "unsubscribed_all": "Du er meldt av all markedsføring på denne kanalen.",
        "bad_title": "Lenken virker ikke",
        "bad": "Denne avmeldingslenken er ikke gyldig. Den kan være ufullstendig eller endret. "
        "Prøv lenken i en nyere e-post, eller svar avsenderen direkte.",
        "error": "Noe gikk galt, og ingenting ble endret. Prøv igjen om et minutt.",
    },
    "en": {
        "title": "Unsubscribe",
        "intro": "Email from {tenant} to {address}.",
        "intro_sms": "Text messages from {tenant} to {address}.",
        "intro_unknown": "Here you can unsubscribe from marketing.",
        "topic": "Unsubscribe me from “{topic}”",
        "all_email": "Unsubscribe me from all marketing email",
        "all_sms": "Unsubscribe me from all marketing text messages",
        "preferences": "What would you still like to receive?",
        "save": "Save my choices",
        "done": "You are unsubscribed.",
        "done_topic": "You are unsubscribed from “{topic}”.",
        "done_saved": "Your choices are saved.",
        "spooled": "We have received your unsubscribe. It will be recorded shortly.",
        "already": "You were already unsubscribed.",
        "undo_hint": "Clicked by mistake?",
        "resubscribe_hint": "Changed your mind?",
        "undo": "Subscribe me again",
        "resubscribed": "You are subscribed again.",
        "unsubscribed_all": "You are unsubscribed from all marketing on this channel.",
        "bad_title": "This link does not work",
        "bad": "This unsubscribe link is not valid. It may be incomplete or altered. "
        "Try the link in a more recent message, or reply to the sender.",
        "error": "Something went wrong and nothing was changed. Please try again in a minute.",
    },
}

_STYLE = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f6f7f9;color:#1b1f24}
main{max-width:34rem;margin:0 auto;padding:1.5rem 1rem;overflow-wrap:anywhere}
h1{font-size:1.5rem;margin:0 0 1rem}
form{margin:1rem 0}
button{font:inherit;padding:.75rem 1rem;border-radius:.5rem;border:1px solid #1b1f24;background:#fff;
cursor:pointer;width:100%;margin:.25rem 0;text-align:left}
button.primary{background:#1b1f24;color:#fff}
button:focus-visible,input:focus-visible{outline:3px solid #2563eb;outline-offset:2px}
fieldset{border:1px solid #c9ced6;border-radius:.5rem;padding:.75rem 1rem;margin:0 0 .75rem}
label{display:flex;gap:.5rem;align-items:flex-start;padding:.35rem 0}
input[type=checkbox]{margin-top:.35rem;flex:none}
.note{color:#4b5563}
"""

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL; never leak it onwards
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}


def pick_language(accept_language: str | None) -> Language:
    """Norwegian (nb/nn/no) when the browser prefers it over English; English otherwise."""
    best: tuple[float, Language] = (0.0, "en")
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.split("-")[0]
        language: Language | None = (
            "nb" if primary in ("nb", "nn", "no") else "en" if primary == "en" else None
        )
        if language and quality > best[0]:
            best = (quality, language)
    return best[1]


def _document(lang: Language, title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )


def _hidden_lang(lang: Language) -> str:
    return f'<input type="hidden" name="lang" value="{lang}">'


def unsubscribe_page(lang: Language, channel: str, state: PageState) -> str:
    """The page behind GET /u/{token}: the choices, each a form posting back to the same URL."""
    t = TEXT[lang]
    if state.tenant_name and state.masked_address:
        intro = t["intro_sms" if channel == "sms" else "intro"].format(
            tenant=escape(state.tenant_name), address=escape(state.masked_address)
        )
    else:
        intro = t["intro_unknown"]
    parts = [f"<h1>{escape(t['title'])}</h1>", f"<p>{intro}</p>"]
    if state.unsubscribed_all:
        parts.append(f'<p role="status">{escape(t["unsubscribed_all"])}</p>')
        parts.append(_undo_form(lang, "all", hint="resubscribe_hint"))
        return _document(lang, t["title"], "".join(parts))
    if state.token_topic:
        parts.append(
            f'<form method="post">{_hidden_lang(lang)}<input type="hidden" name="action" value="topic">'
            '<button class="primary" type="submit">'
            f"{escape(t['topic'].format(topic=state.token_topic))}</button></form>"
        )
    all_label = t["all_sms" if channel == "sms" else "all_email"]
    parts.append(
        f'<form method="post">{_hidden_lang(lang)}<input type="hidden" name="action" value="all">'
        f'<button class="{"" if state.token_topic else "primary"}" type="submit">'
        f"{escape(all_label)}</button></form>"
    )
    if state.topics:
        boxes = "".join(
            f'<label><input type="checkbox" name="topic" value="{escape(topic.name)}"'
            f"{'' if topic.unsubscribed else ' checked'}> {escape(topic.name)}</label>"
            for topic in state.topics
        )
        parts.append(
            f'<form method="post">{_hidden_lang(lang)}<input type="hidden" name="action" value="preferences">'
            f"<fieldset><legend>{escape(t['preferences'])}</legend>{boxes}</fieldset>"
            f'<button type="submit">{escape(t["save"])}</button></form>'
        )
    return _document(lang, t["title"], "".join(parts))


def _undo_form(lang: Language, scope: str, hint: str = "undo_hint") -> str:
    t = TEXT[lang]
    return (
        f'<p class="note">{escape(t[hint])}</p>'
        f'<form method="post">{_hidden_lang(lang)}<input type="hidden" name="action" value="undo">'
        f'<input type="hidden" name="scope" value="{escape(scope)}">'
        f'<button type="submit">{escape(t["undo"])}</button></form>'
    )


def confirmation_page(
    lang: Language, message_key: str, *, topic: str | None = None, undo_scope: str | None = None
) -> str:
    """What the page's own form gets back: what happened, and an undo for a mistaken click."""
    t = TEXT[lang]
    message = t[message_key].format(topic=escape(topic or ""))
    body = f'<h1>{escape(t["title"])}</h1><p role="status">{message}</p>'
    if undo_scope:
        body += _undo_form(lang, undo_scope)
    return _document(lang, t["title"], body)


def message_page(lang: Language, title_key: str, message_key: str) -> str:
    """A page with one message (bad link, temporary error)."""
    t = TEXT[lang]
    return _document(lang, t[title_key], f"<h1>{escape(t[title_key])}</h1><p>{escape(t[message_key])}</p>")
