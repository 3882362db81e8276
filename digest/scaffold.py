"""The packaged default theme and starter glossary, and `digest init`: a new newsletter folder.

A checkout keeps the default theme in `templates/` and the starter glossary in `terms/`, where a
reader of the repository looks for them; the wheel carries the same folders as package data at
`digest/theme` and `digest/starter` (pyproject.toml maps them). The locators below find them in
both layouts, next to the `digest` package that is running, so an installed digest never picks
up a checkout's files or the other way round.

`scaffold` is what `digest init DIR` does, in the way `pelican-quickstart` starts a site: a few
starter terms, a `digest.toml` listing every setting with its default, an empty `templates/` for
overrides and a `.gitignore` for what digest writes at run time. It never overwrites a file.
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from digest.config import Settings
from digest.packaged import default_theme_dir, starter_terms_dir

__all__ = [
    "STARTER_TERMS",
    "ScaffoldError",
    "Scaffolded",
    "scaffold",
    "settings_toml",
]

# Five starter terms that relate to one another (all about prompting), so the new glossary is
# valid on its own once `related` lists are cut down to these: an editor starts from a glossary
# that `digest terms validate` passes and `digest demo` can send.
STARTER_TERMS = (
    "prompting",
    "zero-shot-learning",
    "few-shot-learning",
    "in-context-learning",
    "chain-of-thought",
)

GITIGNORE = """\
# Written by digest while it runs; none of it belongs in version control.
# subscribers/ holds the database (readers' addresses) and the key that signs their links.
subscribers/
outbox/
build/
__pycache__/
# The parse cache of the glossary: rebuilt from terms/ whenever it is missing.
.digest-cache/
"""


class ScaffoldError(Exception):
    """`digest init` cannot start a newsletter in the folder given; the message says why."""


@dataclass(frozen=True, slots=True)
class Scaffolded:
    """What `scaffold` did: the paths it wrote and the ones it found and left alone."""

    root: Path
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- digest.toml

_TOML_HEADER = """\
# The settings of this newsletter. digest reads ./digest.toml from the folder it runs in (or
# the file named by --config or DIGEST_CONFIG); an environment variable wins over this file.
# Every setting is listed below with its default, commented out: remove the "#" in front of
# a setting to change it. Keep secrets (secret_key, sendgrid_api_key) in the environment
# rather than in a file you commit.
"""


def settings_toml() -> str:
    """`digest.toml` listing every Settings field with its default, all commented out.

    Generated from the Settings model (description, allowed values, environment variable,
    default), so the file `digest init` writes never drifts from what digest reads.
    """
    blocks = [_TOML_HEADER]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        facts = ["env " + " or ".join(_env_names(name, info)), *_constraints(info)]
        if default is None:
            facts.append("not set by default")
        lines = [f"# {info.description}"] if info.description else []
        lines.append(f"# ({'; '.join(facts)})")
        lines.append(f"#{name} =" if default is None else f"#{name} = {_toml_value(default)}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _env_names(name: str, info: FieldInfo) -> list[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"{prefix}{name}".upper()]


def _constraints(info: FieldInfo) -> list[str]:
    """What the model refuses, in words: the choices of a Literal and numeric bounds."""
    notes: list[str] = []
    choices = _literal_choices(info.annotation)
    if choices:
        notes.append("one of: " + ", ".join(json.dumps(c) for c in choices))
    bounds = (("ge", "at least"), ("gt", "more than"), ("le", "at most"), ("lt", "less than"))
    for item in info.metadata:  # annotated_types.Ge(ge=1) and friends, as Field(ge=1) makes them
        for attribute, words in bounds:
            if (bound := getattr(item, attribute, None)) is not None:
                notes.append(f"{words} {bound}")
    return notes


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        for arg in typing.get_args(annotation):
            if typing.get_origin(arg) is Literal:
                return typing.get_args(arg)
    return ()


def _toml_value(value: object) -> str:
    """A default as TOML. JSON's string escapes are a subset of TOML's basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for a default of type {type(value).__name__}: {value!r}")


# --------------------------------------------------------------------------- starter terms

_RELATED_ITEM = re.compile(r"^\s+-\s+(?P<slug>[a-z0-9-]+)\s*$")


def _starter_term(slug: str, keep: frozenset[str]) -> str:
    """A starter term's file with its `related` list cut to the terms copied with it, so every
    link in the new glossary resolves. Only the `related:` block of the front matter changes."""
    text = (starter_terms_dir() / f"{slug}.md").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == "related:")
    except StopIteration:
        raise ValueError(f"starter term {slug}: no block-style 'related:' list") from None
    out = lines[: start + 1]
    i = start + 1
    while i < len(lines) and (match := _RELATED_ITEM.match(lines[i])):
        if match["slug"] in keep:
            out.append(lines[i])
        i += 1
    if len(out) == start + 1:  # no related term left: YAML needs an explicit empty list
        out[start] = "related: []\n"
    return "".join(out + lines[i:])


# --------------------------------------------------------------------------- scaffold

_TEMPLATES_README = """\
# Template overrides

A template placed here replaces the default theme's template of the same name, file by file;
every template not here still comes from the default theme. So to change the mail footer,
copy the default theme's `base.mjml.j2` here and edit only that file.

The default theme's templates (keep the same name and subfolder):

{names}

The default theme of the digest that made this folder is in {theme}.
Templates are Jinja2; `.mjml.j2` files are compiled to HTML with MJML. See docs/rendering.md in
digest's repository for the variables each template gets.

This folder is set by DIGEST_TEMPLATES_DIR (`templates_dir` in digest.toml).
"""


def _templates_readme() -> str:
    theme = default_theme_dir()
    names = sorted(p.relative_to(theme).as_posix() for p in theme.rglob("*.j2"))
    return _TEMPLATES_README.format(names="\n".join(f"- `{n}`" for n in names), theme=theme)


def scaffold(directory: Path, *, force: bool = False) -> Scaffolded:
    """Start a newsletter in `directory` (created if missing) and return what was written.

    A folder that already holds files is refused unless `force`: running `digest init` in the
    wrong place by mistake then changes nothing. With `force` the missing pieces are added and
    every existing file is kept as it is; an existing `terms/` is left whole, because starter
    terms mixed into a glossary someone already writes would be a surprise in the next issue.
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"{root} exists and is not a folder; name a new or empty folder")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ScaffoldError(
            f"{root} is not empty; name a new or empty folder, or pass --force to add what is "
            "missing (existing files are never overwritten)"
        )
    result = Scaffolded(root=root)
    root.mkdir(parents=True, exist_ok=True)

    def write(relative: str, text: str) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("x", encoding="utf-8", newline="\n") as fh:  # "x": never overwrite
                fh.write(text)
        except FileExistsError:
            result.kept.append(path)
            return
        result.created.append(path)

    terms = root / "terms"
    if terms.exists():
        result.kept.append(terms)
    else:
        keep = frozenset(STARTER_TERMS)
        for slug in STARTER_TERMS:
            write(f"terms/{slug}.md", _starter_term(slug, keep))
    write("digest.toml", settings_toml())
    write("templates/README.md", _templates_readme())
    write(".gitignore", GITIGNORE)
    return result
