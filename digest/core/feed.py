"""The RSS 2.0 feed of past issues, rendered from their frozen snapshots.

Pure: issue records and `now` in, XML text out. The XML comes from an autoescaped Jinja2
template (`templates/feed.xml.j2`), so every value is escaped by the template engine.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from digest.config import Settings
from digest.core.render import base_context, render_article, render_template
from digest.core.urls import Urls
from digest.model.issue import IssueRecord
from digest.model.snapshot import readable

__all__ = ["render_feed"]

# Characters XML 1.0 forbids even as character references; one stray form feed in a term file
# would otherwise make the whole feed unreadable to every reader.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(text: str) -> str:
    return _NOT_XML.sub("", text)


def _published(record: IssueRecord, settings: Settings) -> datetime:
    """When the issue went out; an issue not sent yet is dated to the start of its week, which
    keeps a static build reproducible (no build-time clock in the output)."""
    when = record.sent_at or record.week.starts_at(settings.zone)
    return when.astimezone(UTC)


def _rfc822(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


def render_feed(settings: Settings, records: Sequence[IssueRecord], now: datetime) -> str:
    """RSS 2.0 of the newest `settings.feed_items` issues among `records`, newest first.

    The caller chooses which issues are public (the web app passes sent ones; a static build
    adds the issue it just built). `lastBuildDate` is the newest item's date — when the channel
    last changed — and `now` only when there are no items yet.

    An issue whose snapshot this digest cannot read (built by a newer one) is left out rather
    than breaking the feed for every reader; `digest check` names it (campaign.preflight).
    """
    chosen = sorted(
        (r for r in records if r.snapshot and readable(r)), key=lambda r: r.week, reverse=True
    )
    chosen = chosen[: settings.feed_items]
    context = base_context(settings)
    urls: Urls = context["urls"]
    items = []
    for record in chosen:
        assert record.snapshot is not None
        term = record.snapshot["term"]
        items.append(
            {
                "title": _xml_safe(term["title"]),
                "url": urls.archive_page(record.week),
                "pub_date": _rfc822(_published(record, settings)),
                "category": _xml_safe(term["category"]),
                # Readers take <description> as HTML: escape the plain-text summary for HTML
                # here, and the template escapes that again for XML.
                "summary": html.escape(_xml_safe(term["summary"]), quote=False),
                "content": _xml_safe(render_article(record.snapshot, settings)),
            }
        )
    newest = max((_published(r, settings) for r in chosen), default=now)
    context.update(
        newsletter_name=_xml_safe(settings.newsletter_name),
        description=_xml_safe(
            f"{settings.newsletter_name}: one AI term explained every week — what it means, "
            "why it matters, how it works, and related concepts."
        ),
        last_build_date=_rfc822(newest),
        items=items,
    )
    return render_template(settings.templates_dir, "feed.xml.j2", context)
