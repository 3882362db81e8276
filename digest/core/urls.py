"""Every public address digest writes: the one place that knows how its URLs are built.

Built once from settings (`Urls.from_settings`), so the mails, the archive, the feed and the
checks that verify them all agree on one scheme; a template gets the same object as `urls`.
A reader's language other than the newsletter's rides on the archive's addresses as `?lang=`
(docs/translating.md), so a Dutch reader's links open Dutch pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from digest.config import GLOSSARY_PATH

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.core.tokens import Purpose
    from digest.model.weeks import IsoWeek

__all__ = ["Urls"]


@dataclass(frozen=True, slots=True)
class Urls:
    """The site's addresses. `base_url` is the web app (archive, feed, subscriber links);
    `site_url` the glossary's own site (term pages). Both without a trailing slash, as
    settings keep them; `unsubscribe_mailto` is the optional mailbox of List-Unsubscribe.
    `lang`: the locale the archive's pages are asked in (`?lang=`), None for the newsletter's
    own, whose addresses carry no query at all."""

    base_url: str
    site_url: str
    unsubscribe_mailto: str | None = None
    lang: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, locale: str | None = None) -> Urls:
        """The addresses of `settings`, for a reader of `locale` (None: the newsletter's own).

        `settings` are the newsletter's, not a copy made `for_locale`: their locale is the
        one that needs no `?lang=`, and a copy no longer knows it."""
        lang = locale if locale and locale != settings.locale else None
        return cls(settings.base_url, settings.site_url, settings.unsubscribe_mailto, lang)

    def in_language(self, url: str) -> str:
        """`url`, an archive address stored as it was built (a snapshot's previous issues),
        asked in this reader's language: unchanged for the newsletter's own."""
        if self.lang is None:
            return url
        address, hash_, fragment = url.partition("#")
        joiner = "&" if "?" in address else "?"
        return f"{address}{joiner}lang={quote(self.lang)}{hash_}{fragment}"

    # ------------------------------------------------------------------- public pages

    def home(self) -> str:
        """The subscribe page."""
        return f"{self.base_url}/"

    def glossary_index(self) -> str:
        """The glossary site's index of every term."""
        return f"{self.site_url}/"

    def own_glossary(self) -> str:
        """digest's own glossary index, served and built whatever `site_url` says: the pages'
        navigation links here, so it never leaves digest's site for one it cannot check."""
        return f"{self.base_url}{GLOSSARY_PATH}/"

    def term(self, slug: str) -> str:
        """A term's page on the glossary site."""
        return f"{self.site_url}/{slug}"

    def archive_index(self) -> str:
        return self.in_language(f"{self.base_url}/issues/")

    def archive_page(self, week: IsoWeek | str) -> str:
        """An issue's public page in the web archive (also the email's "view in browser" link)."""
        return self.in_language(f"{self.base_url}/issues/{week}")

    def quiz_answer(self, week: IsoWeek | str, answer: int) -> str:
        """One answer of an issue's quiz: its archive page, which says right or wrong; the
        fragment scrolls to the quiz. A plain GET that changes nothing (scanners follow it)."""
        return self.in_language(f"{self.base_url}/issues/{week}?answer={answer}#quiz")

    def feed(self) -> str:
        """The RSS 2.0 feed; `feed_atom` and `feed_json` carry the same items."""
        return f"{self.base_url}/feed.xml"

    def feed_atom(self) -> str:
        return f"{self.base_url}/feed.atom"

    def feed_json(self) -> str:
        return f"{self.base_url}/feed.json"

    def feed_stylesheet(self) -> str:
        """The XSLT that shows the RSS feed as a page in a browser."""
        return f"{self.base_url}/feed.xsl"

    # ------------------------------------------------------------------- subscriber links

    def token_prefix(self, purpose: Purpose) -> str:
        """What every `purpose` link starts with; the signed token follows it."""
        return f"{self.base_url}/{purpose}/"

    def token_link(self, purpose: Purpose, token: str) -> str:
        return f"{self.token_prefix(purpose)}{token}"

    def confirm(self, token: str) -> str:
        return self.token_link("confirm", token)

    def unsubscribe(self, token: str) -> str:
        """The unsubscribe page; a POST to it is the RFC 8058 one-click unsubscribe."""
        return self.token_link("unsubscribe", token)

    def preferences(self, token: str) -> str:
        return self.token_link("preferences", token)

    def list_unsubscribe(self, token: str) -> str:
        """The List-Unsubscribe header value: the one-click https URL first (RFC 8058), then
        the mailbox when one is configured (written with or without `mailto:`)."""
        value = f"<{self.unsubscribe(token)}>"
        if self.unsubscribe_mailto:
            mailbox = self.unsubscribe_mailto.removeprefix("mailto:")
            value += f", <mailto:{mailbox}?subject=unsubscribe>"
        return value

    def click(self, token: str) -> str:
        """A tracked link (DIGEST_TRACK_CLICKS): redirects to the issue's stored target."""
        return f"{self.base_url}/r/{token}"

    # ------------------------------------------------------------------- the editors' desk

    def desk_issue(self, week: IsoWeek | str) -> str:
        """An issue's page in the editors' desk: its preview, and approve / hold."""
        return f"{self.base_url}/admin/issues/{week}"
