"""The recipient-facing HTML: small, fast, no JavaScript, readable on a phone, Norwegian or English.

Every page says what is true now (from `preferences.PageState`) and offers the way to change it.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from suppress.preferences import Language, PageState, PageTopic

TEXT: dict[Language, dict[str, str]] = {
    "nb": {
        "title": "Avmelding",
        "language": "Språk",
        "intro": "E‑post fra {sender} til {address}.",
        "intro_sms": "SMS fra {sender} til {address}.",
        "intro_unknown": "Her kan du melde deg av markedsføring.",
        "channel": "e‑post",
        "channel_sms": "SMS",
        "topic": "Meld meg av «{topic}»",
        "all": "Meld meg av all markedsføring på {channel}",
        "preferences": "Dette får du fra {sender}",
        "save": "Lagre valgene",
        "basis_consent": "Du får dette fordi du sa ja {date}.",
        "basis_consent_undated": "Du får dette fordi du har sagt ja.",
        "basis_customer": "Du får dette fordi du er kunde.",
        "why_unsubscribed": "Du meldte deg av {date}.",
        "why_unsubscribed_undated": "Du har meldt deg av.",
        "why_no_basis": "Du har ikke sagt ja til dette.",
        "why_other": "Dette sendes ikke til deg nå.",
        "tick_to_start": "Kryss av for å få dette.",
        "not_sent": "Sendes ikke til deg",
        "notice_intro": "Krysser du av for noe du ikke får i dag, sier du ja til dette:",
        "unsubscribed_topic": "Du er meldt av «{topic}».",
        "unsubscribed_all": "Du er meldt av all markedsføring på {channel} fra {sender}.",
        "blocked": "{sender} sender deg ikke markedsføring på {channel} nå.",
        "done_topic": "Du er meldt av «{topic}».",
        "done_all": "Du er meldt av all markedsføring på {channel} fra {sender}.",
        "already_topic": "Du var allerede meldt av «{topic}».",
        "already_all": "Du var allerede meldt av all markedsføring på {channel}.",
        "done": "Du er meldt av.",
        "already": "Du var allerede meldt av.",
        "spooled": "Vi har mottatt avmeldingen din. Den blir registrert i løpet av kort tid.",
        "saved": "Valgene dine er lagret.",
        "undone": "Avmeldingen er angret. Alt er som før du meldte deg av.",
        "nothing_to_undo": "Det var ingenting å angre, så ingenting ble endret.",
        "undo_hint": "Trykket du feil?",
        "undo_topic": "Angre avmeldingen fra «{topic}»",
        "undo_all": "Angre avmeldingen fra all markedsføring",
        "see_choices": "Se og endre valgene dine",
        "refused": "Dette valget kan ikke gjøres her. Ingenting ble endret.",
        "notice_changed": "Teksten du sa ja til, er endret siden siden ble vist. Ingenting ble endret; "
        "se over valgene igjen.",
        "bad_title": "Lenken virker ikke",
        "bad": "Denne avmeldingslenken er ikke gyldig. Den kan være ufullstendig eller endret. "
        "Prøv lenken i en nyere e-post, eller svar avsenderen direkte.",
        "error": "Noe gikk galt, og ingenting ble endret. Prøv igjen om et minutt.",
    },
    "en": {
        "title": "Unsubscribe",
        "language": "Language",
        "intro": "Email from {sender} to {address}.",
        "intro_sms": "Text messages from {sender} to {address}.",
        "intro_unknown": "Here you can unsubscribe from marketing.",
        "channel": "email",
        "channel_sms": "text message",
        "topic": "Unsubscribe me from “{topic}”",
        "all": "Unsubscribe me from all marketing by {channel}",
        "preferences": "What you get from {sender}",
        "save": "Save my choices",
        "basis_consent": "You get this because you said yes on {date}.",
        "basis_consent_undated": "You get this because you said yes.",
        "basis_customer": "You get this because you are a customer.",
        "why_unsubscribed": "You unsubscribed on {date}.",
        "why_unsubscribed_undated": "You have unsubscribed.",
        "why_no_basis": "You have not said yes to this.",
        "why_other": "This is not sent to you now.",
        "tick_to_start": "Tick to get this.",
        "not_sent": "Not sent to you",
        "notice_intro": "If you tick something you do not get today, you agree to this:",
        "unsubscribed_topic": "You are unsubscribed from “{topic}”.",
        "unsubscribed_all": "You are unsubscribed from all marketing by {channel} from {sender}.",
        "blocked": "{sender} does not send you marketing by {channel} now.",
        "done_topic": "You are unsubscribed from “{topic}”.",
        "done_all": "You are unsubscribed from all marketing by {channel} from {sender}.",
        "already_topic": "You were already unsubscribed from “{topic}”.",
        "already_all": "You were already unsubscribed from all marketing by {channel}.",
        "done": "You are unsubscribed.",
        "already": "You were already unsubscribed.",
        "spooled": "We have received your unsubscribe. It will be recorded shortly.",
        "saved": "Your choices are saved.",
        "undone": "Your unsubscribe is undone. Everything is as it was before you unsubscribed.",
        "nothing_to_undo": "There was nothing to undo, so nothing was changed.",
        "undo_hint": "Clicked by mistake?",
        "undo_topic": "Undo my unsubscribe from “{topic}”",
        "undo_all": "Undo my unsubscribe from all marketing",
        "see_choices": "See and change your choices",
        "refused": "This choice cannot be made here. Nothing was changed.",
        "notice_changed": "The text you agreed to has changed since the page was shown. Nothing was "
        "changed; please look at your choices again.",
        "bad_title": "This link does not work",
        "bad": "This unsubscribe link is not valid. It may be incomplete or altered. "
        "Try the link in a more recent message, or reply to the sender.",
        "error": "Something went wrong and nothing was changed. Please try again in a minute.",
    },
}
LANGUAGE_NAMES: dict[Language, str] = {"nb": "Norsk", "en": "English"}

_STYLE = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f6f7f9;color:#1b1f24}
main{max-width:34rem;margin:0 auto;padding:1.5rem 1rem;overflow-wrap:anywhere}
nav{text-align:right;font-size:.9rem}
nav a{color:#1d4ed8;padding:.5rem;display:inline-block}
h1{font-size:1.5rem;margin:0 0 1rem}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
form{margin:1rem 0}
button{font:inherit;padding:.75rem 1rem;border-radius:.5rem;border:1px solid #1b1f24;background:#fff;
color:#1b1f24;cursor:pointer;width:100%;margin:.25rem 0;text-align:left;min-height:44px}
button.primary{background:#1b1f24;color:#fff}
a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid #2563eb;outline-offset:2px}
fieldset{border:1px solid #6b7280;border-radius:.5rem;padding:.75rem 1rem;margin:0 0 .75rem}
legend{font-weight:600;padding:0 .25rem}
.topic{padding:.35rem 0}
.topic label{display:flex;gap:.5rem;align-items:flex-start;font-weight:600}
input[type=checkbox]{margin-top:.35rem;flex:none;width:1.1rem;height:1.1rem}
.topic p{margin:.1rem 0 0 1.6rem}
.note{color:#374151}
.status{background:#e8f0fe;border-left:4px solid #1d4ed8;padding:.5rem .75rem}
.problem{background:#fdecea;border-left:4px solid #b42318;padding:.5rem .75rem}
blockquote{margin:.5rem 0;padding:.5rem .75rem;border-left:4px solid #6b7280;background:#fff}
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


def pick_language(accept_language: str | None, chosen: str | None = None) -> Language:
    """`chosen` (the page's own switch, `?lang=` or the form's field) when it is nb or en; otherwise
    Norwegian (nb/nn/no) when the browser prefers it over English, and English by default."""
    if chosen in ("nb", "en"):
        return "nb" if chosen == "nb" else "en"
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


def _document(lang: Language, title: str, body: str, *, switch: bool = False) -> str:
    nav = ""
    if switch:
        current = ' aria-current="page"'
        links = "".join(
            f'<a href="?lang={code}" lang="{code}" hreflang="{code}"'
            f"{current if code == lang else ''}>{name}</a>"
            for code, name in LANGUAGE_NAMES.items()
        )
        nav = f'<nav aria-label="{escape(TEXT[lang]["language"])}">{links}</nav>'
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{nav}{body}</main></body></html>"
    )


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{escape(value)}">'


def _date(at: datetime | None) -> str | None:
    return at.date().isoformat() if at else None


class Message:
    """A status line for the top of the page: a key of TEXT and its values (escaped on render)."""

    def __init__(self, key: str, *, problem: bool = False, **values: str) -> None:
        self.key, self.problem, self.values = key, problem, values

    def render(self, lang: Language) -> str:
        text = TEXT[lang][self.key].format(**{k: escape(v) for k, v in self.values.items()})
        role, css = ("alert", "problem") if self.problem else ("status", "status")
        return f'<p role="{role}" class="{css}">{text}</p>'


def channel_word(lang: Language, channel: str) -> str:
    return TEXT[lang]["channel_sms" if channel == "sms" else "channel"]


def recipient_page(lang: Language, state: PageState, message: Message | None = None) -> str:
    """The page behind /u/{token}: what is true now, and each way to change it as a form posting back
    to the same URL. `message` says what the last action did."""
    t = TEXT[lang]
    sender = state.sender or ""
    channel = channel_word(lang, state.channel)
    if state.sender and state.masked_address:
        intro = t["intro_sms" if state.channel == "sms" else "intro"].format(
            sender=escape(state.sender), address=escape(state.masked_address)
        )
    else:
        intro = t["intro_unknown"]
    parts = [f"<h1>{escape(t['title'])}</h1>", f"<p>{intro}</p>"]
    if message is not None:
        parts.append(message.render(lang))
    form = f'<form method="post">{_hidden("lang", lang)}'
    if not state.available:  # the database cannot be read: an unsubscribe still works (spooled)
        parts.append(
            f'{form}{_hidden("action", "all")}<button class="primary" type="submit">'
            f"{escape(t['all'].format(channel=channel))}</button></form>"
        )
        return _document(lang, t["title"], "".join(parts), switch=True)
    # the state line would repeat a message that just said the same
    said = message is not None and message.key.startswith(("done_", "already_"))
    if said and state.blocked == "unsubscribed":
        pass
    elif state.blocked == "unsubscribed":
        text = t["unsubscribed_all"].format(channel=escape(channel), sender=escape(sender))
        parts.append(f"<p><strong>{text}</strong></p>")
    elif state.blocked:
        parts.append(f"<p><strong>{escape(t['blocked'].format(channel=channel, sender=sender))}</strong></p>")
    parts.append(_undo_form(lang, state, form))
    if state.blocked:
        return _document(lang, t["title"], "".join(parts), switch=True)
    token_topic = state.token_topic
    if token_topic is not None and token_topic.reason == "unsubscribed":
        if not said:
            text = t["unsubscribed_topic"].format(topic=escape(token_topic.label(lang)))
            parts.append(f"<p><strong>{text}</strong></p>")
    elif token_topic is not None and token_topic.allowed:
        parts.append(
            f'{form}{_hidden("action", "topic")}<button class="primary" type="submit">'
            f"{escape(t['topic'].format(topic=token_topic.label(lang)))}</button></form>"
        )
    all_class = "" if token_topic is not None and token_topic.allowed else "primary"
    parts.append(
        f'{form}{_hidden("action", "all")}<button class="{all_class}" type="submit">'
        f"{escape(t['all'].format(channel=channel))}</button></form>"
    )
    parts.append(_preferences(lang, state, form))
    return _document(lang, t["title"], "".join(parts), switch=True)


def _undo_form(lang: Language, state: PageState, form: str) -> str:
    undo = state.undo
    if undo is None:
        return ""
    t = TEXT[lang]
    topic = state.topic(undo.topic_id)
    label = t["undo_topic"].format(topic=topic.label(lang)) if topic else t["undo_all"]
    return (
        f'<p class="note">{escape(t["undo_hint"])}</p>'
        f"{form}{_hidden('action', 'undo')}{_hidden('event', str(undo.event_id))}"
        f'<button type="submit">{escape(label)}</button></form>'
    )


def _why(lang: Language, topic: PageTopic) -> str:
    t = TEXT[lang]
    date = _date(topic.since)
    if topic.basis == "consent":
        return t["basis_consent"].format(date=date) if date else t["basis_consent_undated"]
    if topic.basis == "customer_relationship":
        return t["basis_customer"]
    if topic.reason == "unsubscribed":
        return t["why_unsubscribed"].format(date=date) if date else t["why_unsubscribed_undated"]
    if topic.reason == "no_basis":
        return t["why_no_basis"]
    return t["why_other"]


def _preferences(lang: Language, state: PageState, form: str) -> str:
    t = TEXT[lang]
    shown = [topic for topic in state.topics if topic.allowed or topic.can_opt_in]
    hidden_ = [topic for topic in state.topics if not (topic.allowed or topic.can_opt_in)]
    html = ""
    if shown:
        boxes = []
        for topic in shown:
            about = f"t{topic.id}-about"
            notes = [topic.description(lang), _why(lang, topic)]
            if topic.can_opt_in:
                notes.append(t["tick_to_start"])
            boxes.append(
                f'<div class="topic"><label><input type="checkbox" name="topic" value="{escape(topic.name)}"'
                f'{" checked" if topic.allowed else ""} aria-describedby="{about}"> '
                f"<span>{escape(topic.label(lang))}</span></label>"
                f'<p class="note" id="{about}">{escape(" ".join(n for n in notes if n))}</p></div>'
            )
        notice = ""
        if state.notice is not None and any(topic.can_opt_in for topic in shown):
            text = getattr(state.notice, lang)
            notice = (
                f'<p class="note">{escape(t["notice_intro"])}</p><blockquote>{escape(text.text)}</blockquote>'
                + _hidden("notice_version", text.version)
            )
        legend = t["preferences"].format(sender=state.sender or "")
        html += (
            f"{form}{_hidden('action', 'preferences')}<fieldset><legend>{escape(legend)}</legend>"
            f'{"".join(boxes)}</fieldset>{notice}<button type="submit">{escape(t["save"])}</button></form>'
        )
    if hidden_:
        items = "".join(
            f"<li><strong>{escape(topic.label(lang))}</strong>: {escape(_why(lang, topic))}</li>"
            for topic in hidden_
        )
        html += f"<h2>{escape(t['not_sent'])}</h2><ul>{items}</ul>"
    return html


def confirmation_page(lang: Language, message: Message) -> str:
    """The short answer to a one-click POST (no state read): what happened, and the way to the page."""
    t = TEXT[lang]
    body = (
        f"<h1>{escape(t['title'])}</h1>{message.render(lang)}"
        f'<p><a href="?lang={lang}">{escape(t["see_choices"])}</a></p>'
    )
    return _document(lang, t["title"], body)


def message_page(lang: Language, title_key: str, message_key: str) -> str:
    """A page with one message (bad link, temporary error)."""
    t = TEXT[lang]
    return _document(lang, t[title_key], f"<h1>{escape(t[title_key])}</h1><p>{escape(t[message_key])}</p>")
