"""The recipient-facing HTML: small, fast, no JavaScript, readable on a phone, Norwegian or English.

Every page says what is true now (from `preferences.PageState`) and offers the way to change it.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from suppress.api.page_texts import LANGUAGE_NAMES, TEXT
from suppress.preferences import Language, PageState, PageTopic

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
