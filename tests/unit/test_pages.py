"""The recipient page's pure parts: the language switch and a topic's texts per language."""

from __future__ import annotations

from suppress.api.pages import pick_language
from suppress.preferences import PageTopic
from suppress.topics import TopicDisplay, TopicText


def test_the_page_switch_wins_over_accept_language() -> None:
    assert pick_language("en-GB,en;q=0.9", "nb") == "nb"
    assert pick_language("nb-NO", "en") == "en"
    assert pick_language("nb-NO", "de") == "nb"  # not a language of the page: the browser's choice
    assert pick_language(None, None) == "en"


def test_topic_texts_fall_back_to_the_other_language_then_the_name() -> None:
    def topic(display: TopicDisplay) -> PageTopic:
        return PageTopic(id=1, name="news", display=display, allowed=True, basis="consent", reason=None)

    both = topic(
        TopicDisplay(nb=TopicText(label="Nyheter", description="Hver uke."), en=TopicText(label="News"))
    )
    assert (both.label("nb"), both.description("nb")) == ("Nyheter", "Hver uke.")
    assert (both.label("en"), both.description("en")) == ("News", "")
    only_nb = topic(TopicDisplay(nb=TopicText(label="Nyheter")))
    assert only_nb.label("en") == "Nyheter"
    assert topic(TopicDisplay()).label("en") == "news"
