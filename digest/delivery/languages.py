"""Which content each reader of a send gets — the issue's own, or its rendition in the reader's
language — and the walks a send makes: one per language, since one batch is one provider request
with one content.

An issue without renditions is walked once, as before languages existed; with renditions, the
readers of each language are walked in turn (`audience.Language`), and every ledger row says
which rendition its reader was claimed for, so a batch resumed after a crash sends that one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import Engine

from digest.delivery.audience import Language
from digest.logs import get_logger, log_event
from digest.model.issue import IssueRecord
from digest.store.renditions import get_renditions

__all__ = ["Contents"]

log = get_logger("digest.delivery.languages")


@dataclass(frozen=True, slots=True)
class Contents:
    """An issue's content per language, each an `IssueRecord` the send's mails are made of."""

    own: IssueRecord
    by_locale: dict[str, IssueRecord]

    @classmethod
    def of(cls, engine: Engine, issue: IssueRecord) -> Contents:
        """`issue` and its stored renditions: the same issue (id, week, send, links), each with
        its own subject, preheader and bodies."""
        renditions = get_renditions(engine, issue.id)
        return cls(
            issue,
            {
                locale: replace(
                    issue,
                    subject=r.subject,
                    preheader=r.preheader,
                    html=r.html,
                    text=r.text,
                    archive_html=r.archive_html,
                )
                for locale, r in renditions.items()
            },
        )

    def walks(self) -> list[Language | None]:
        """The walks over the audience: one over everyone without renditions (None), else the
        issue's own readers first, then each rendition's, in locale order."""
        if not self.by_locale:
            return [None]
        rendered = frozenset(self.by_locale)
        return [(None, rendered), *((locale, rendered) for locale in sorted(rendered))]

    def all(self) -> list[IssueRecord]:
        return [self.own, *self.by_locale.values()]

    def content(self, locale: str | None) -> IssueRecord:
        """The content readers claimed for `locale` get (None: the issue's own)."""
        if locale is None:
            return self.own
        found = self.by_locale.get(locale)
        if found is None:  # renditions are frozen with the send: only a hand-edited database
            log_event(log, "rendition_missing", week=str(self.own.week), locale=locale)
            return self.own
        return found
