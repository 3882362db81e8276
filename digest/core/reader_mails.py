"""The two mails a reader gets outside the weekly issue: the confirmation of a double opt-in and
the welcome after it.

Pure builders: the settings, the subscriber, their links or recipient and `now` come in, a
`Message` goes out; finding the data and sending are the readers layer's work. The confirmation
mail is rendered (Jinja, then MJML) once per template and language into a skeleton, and each
sign-up only fills its name and link in: rendering it whole cost more than storing the sign-up.
Both mails are written in the reader's language: the confirmation in the one the sign-up's
browser asked for, the welcome in `subscriber.language` (None: the newsletter's own).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.meta
from markupsafe import Markup, escape

from digest.config import Settings
from digest.core.checks import QualityError, check_email, check_message
from digest.core.i18n import reader_locale, translations
from digest.core.mails import PLACEHOLDERS, Message, Recipient
from digest.core.reader_times import delivery_time
from digest.core.render import base_context, environment, mjml_to_html, render_mail
from digest.core.urls import Urls
from digest.model.subscriber import Subscriber

__all__ = ["confirmation_mail", "render_confirmation", "template_family", "welcome_message"]

_CONFIRM_TEMPLATES = ("confirm.mjml.j2", "confirm.txt.j2")


def confirmation_mail(
    settings: Settings, subscriber: Subscriber, confirm_url: str, locale: str | None = None
) -> Message:
    """The mail with the link that confirms `subscriber`'s opt-in (`confirm_url`), in
    `locale` (None: the newsletter's own).

    Byte for byte what `render_confirmation` renders, from the template's skeleton.
    """
    skeleton = _skeleton(settings, named=bool(subscriber.name), locale=locale)
    if skeleton is None:  # the templates do more with the name or link than show them
        html, text = render_confirmation(settings, subscriber.name, confirm_url, locale)
    else:
        html, text = skeleton.fill(subscriber.name or "", confirm_url)
    return _confirmation_message(settings, subscriber, html, text, locale)


def render_confirmation(
    settings: Settings, name: str | None, confirm_url: str, locale: str | None = None
) -> tuple[str, str]:
    """(html, text) of the confirmation mail rendered whole, in `locale`: Jinja, then MJML."""
    context: dict[str, object] = {
        **base_context(settings, locale),
        "name": name,
        "confirm_url": confirm_url,
        "confirm_days": _confirm_days(settings),
    }
    _mjml, html, text = render_mail(settings.templates_dir, "confirm", context)
    return html, text


def _confirm_days(settings: Settings) -> int:
    return max(1, settings.confirm_max_age // 86400)


def _confirmation_message(
    settings: Settings, subscriber: Subscriber, html: str, text: str, locale: str | None
) -> Message:
    words = translations(locale or settings.locale)
    return Message(
        subject=words.gettext("Confirm your subscription to %(name)s")
        % {"name": settings.newsletter_name},
        html=html,
        text=text,
        recipients=[Recipient(email=subscriber.email, name=subscriber.name)],
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        categories=["confirm"],
    )


def welcome_message(
    settings: Settings,
    subscriber: Subscriber,
    recipient: Recipient,
    latest: Mapping[str, str] | None,
    now: datetime,
) -> Message:
    """The welcome mail: what the newsletter is, when it arrives in the reader's time zone, the
    latest sent issue (`latest`: its term's title and summary and its archive url; None before
    the first), and the list mail's links and one-click headers, which `recipient` carries.
    In the reader's language (`subscriber.language`), whose archive links ask for it too.

    Raises `QualityError` when the rendered mail fails the weekly issue's quality gates.
    """
    locale = reader_locale(subscriber.language)
    urls = Urls.from_settings(settings, locale)
    if latest is not None:
        latest = {**latest, "url": urls.in_language(latest["url"])}
    own = settings.for_locale(locale)
    context: dict[str, object] = {
        **base_context(settings, locale),
        "name": subscriber.name,
        "delivery": delivery_time(own, subscriber.timezone, now),
        "latest": latest,
        "unsubscribe_url": PLACEHOLDERS["unsubscribe_url"],
        "preferences_url": PLACEHOLDERS["preferences_url"],
    }
    _mjml, html, text = render_mail(settings.templates_dir, "welcome", context)
    message = Message(
        subject=translations(own.locale).gettext("Welcome to %(name)s")
        % {"name": settings.newsletter_name},
        html=html,
        text=text,
        recipients=[recipient],
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        categories=["welcome"],
    )
    # The weekly issue's gates: the rendered parts, then the message as the reader gets it.
    problems = [*check_email(html, text), *check_message(settings, message)]
    if problems:
        raise QualityError("the welcome mail", problems)
    return message


# --------------------------------------------------------------------------- the skeleton

# Markers no template or setting can hold by chance: a fresh nonce per process.
_NONCE = secrets.token_hex(8)
_MARKERS = {key: f"%%digest-{key}-{_NONCE}%%" for key in ("name", "name_html", "url", "url_html")}
_MARKER_SPLIT = re.compile("(" + "|".join(re.escape(m) for m in _MARKERS.values()) + ")")
_SLOT = {marker: key for key, marker in _MARKERS.items()}
# Readers the skeleton is checked with against a whole render before it is used: a template
# that transforms the name or link (`{{ name|upper }}`, `{% if name|length > 9 %}`) shows here.
_PROBES = (
    ("Ann", "https://probe.example/confirm/AbC-12_3.x"),
    ('Zoë <&> "O\'Brien" %%name%% {{ x }} ' + "w" * 40, "https://probe.example/c/" + "t" * 90),
)


@dataclass(frozen=True, slots=True)
class _Skeleton:
    """One rendering of the confirmation mail with markers for the reader's values: literal
    text and marker names alternating, so filling is one join (a value is never scanned)."""

    html: tuple[str, ...]
    text: tuple[str, ...]
    templates: tuple[jinja2.Template, ...]  # every template it came from, to notice edits

    def fill(self, name: str, confirm_url: str) -> tuple[str, str]:
        values = {
            "name": name,
            "name_html": str(escape(name)),
            "url": confirm_url,
            "url_html": str(escape(confirm_url)),
        }
        return _join(self.html, values), _join(self.text, values)

    @property
    def fresh(self) -> bool:
        return all(template.is_up_to_date for template in self.templates)


def _join(parts: tuple[str, ...], values: Mapping[str, str]) -> str:
    # Odd positions are slots (re.split with one capturing group).
    return "".join(values[_SLOT[part]] if i % 2 else part for i, part in enumerate(parts))


def _where(templates_dir: Path) -> tuple[str, ...]:
    """What names the templates' folders, without resolving them (two realpaths a sign-up):
    the folder as given, and the working folder when it is relative."""
    if templates_dir.is_absolute():
        return (str(templates_dir),)
    return (str(templates_dir), os.getcwd())


# Per process; two threads making the same skeleton at once make equal ones, so no lock.
_skeletons: dict[tuple[object, ...], _Skeleton | None] = {}


def _skeleton(settings: Settings, *, named: bool, locale: str | None) -> _Skeleton | None:
    """The skeleton for these settings, language and templates (None: the templates cannot
    have one). The context names its locale, so each language has a skeleton of its own."""
    context = base_context(settings, locale)
    key = (
        _where(settings.templates_dir),
        named,
        _confirm_days(settings),
        tuple(sorted((k, repr(v)) for k, v in context.items())),
    )
    if key in _skeletons:
        found = _skeletons[key]
        if found is None or found.fresh:
            return found
    made = _make_skeleton(settings, context, named=named, locale=locale)
    if len(_skeletons) > 64:  # settings come and go in tests; a service has one or two
        _skeletons.clear()
    _skeletons[key] = made
    return made


def _make_skeleton(
    settings: Settings, context: Mapping[str, object], *, named: bool, locale: str | None
) -> _Skeleton | None:
    days = _confirm_days(settings)
    values: dict[str, object] = {**context, "confirm_days": days}
    # Jinja escapes what it is given; a marker is plain ASCII with nothing to escape, and the
    # escaped value goes in its place (`name_html`). The text part takes the value as it is.
    name_html = Markup(_MARKERS["name_html"]) if named else None
    url_html = Markup(_MARKERS["url_html"])
    env = environment(settings.templates_dir)
    try:
        mjml = env.get_template("confirm.mjml.j2").render(
            **values, name=name_html, confirm_url=url_html
        )
        text = env.get_template("confirm.txt.j2").render(
            **values,
            name=_MARKERS["name"] if named else None,
            confirm_url=_MARKERS["url"],
        )
    except jinja2.TemplateError:
        return None  # rendering whole raises it, naming the template and line
    html = mjml_to_html(mjml, "confirm.mjml.j2")
    skeleton = _Skeleton(
        tuple(_MARKER_SPLIT.split(html)),
        tuple(_MARKER_SPLIT.split(text)),
        template_family(env, _CONFIRM_TEMPLATES),
    )
    for name, url in _PROBES:
        probe = name if named else None
        whole = render_confirmation(settings, probe, url, locale)
        if skeleton.fill(name if named else "", url) != whole:
            return None
    return skeleton


def template_family(env: jinja2.Environment, names: tuple[str, ...]) -> tuple[jinja2.Template, ...]:
    """`names` and every template they extend, include or import, as loaded now: what a
    rendering made from them depends on (`Template.is_up_to_date` tells when one changed).
    Its home would be `digest.core.render`; it is here with the first skeleton that used it."""
    found: dict[str, jinja2.Template] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found[name] = env.get_template(name)
        assert env.loader is not None
        source = env.loader.get_source(env, name)[0]
        todo.extend(
            ref
            for ref in jinja2.meta.find_referenced_templates(env.parse(source))
            if ref is not None
        )
    return tuple(found.values())
