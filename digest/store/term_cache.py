"""The glossary's parse cache: what each valid term file yielded, kept between runs in the project.

Like Pelican's content cache: one file per terms folder under `<project>/.digest-cache/`, each
entry keyed by its file's stamp and content hash, the whole invalidated by the parsing code's hash.
Only valid files are kept; the loader runs every folder-wide rule over what comes back.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import unicodedata
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from digest.core.term_folder import ParsedTerm
from digest.model.glossary import Alias, Section, Source, Term
from digest.model.weeks import IsoWeek

__all__ = ["CACHE_DIR_NAME", "FORMAT", "TermCache", "code_version"]

log = logging.getLogger(__name__)

CACHE_DIR_NAME = ".digest-cache"
# The layout of the cache file below; raise it whenever the entry's shape changes.
FORMAT = 1

# Every module whose code decides what a term file yields or whether it is valid (kept complete
# by tests/test_term_cache.py), and the libraries they lean on. A hash of the sources, not
# digest's version: the version stays 0.1.0 across every commit of an editable install, and a
# cache kept across a tightened rule would hide the very error that rule now reports.
_PARSING_SOURCES = (
    "core/characters.py",
    "core/term_body.py",
    "core/term_folder.py",
    "core/term_rules.py",
    "core/term_yaml.py",
    "model/glossary.py",
    "model/weeks.py",
    "store/term_cache.py",
    "store/terms.py",
)
_LIBRARIES = ("pydantic", "pydantic_core", "yaml", "markdown_it")

# A file changed again within its timestamp's resolution after it was read (FAT keeps mtimes to
# 2 s) could show the same stamp as the version cached. Entries whose file was modified this
# close to the read are "unsettled": their content is hashed on every load until they settle.
_RACY_NS = 3_000_000_000

_Stamp = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


@cache
def code_version() -> str | None:
    """A hash of the parsing code, the libraries it uses and the Python running it; None when
    some part cannot be found (then nothing is cached: a cache that cannot be invalidated is
    never trusted).

    The libraries count by their installed file's path, size and mtime rather than a version
    read through importlib.metadata: that alone costs 40 ms to import, a sixth of a warm load,
    and any reinstall or upgrade rewrites the file.
    """
    digest = hashlib.sha256(f"{FORMAT}\0{sys.version}\0{unicodedata.unidata_version}".encode())
    package = Path(__file__).resolve().parent.parent
    try:
        for relative in _PARSING_SOURCES:
            digest.update(b"\0" + relative.encode() + b"\0" + (package / relative).read_bytes())
        for library in _LIBRARIES:
            spec = importlib.util.find_spec(library)
            if spec is None or spec.origin is None:
                return None
            info = os.stat(spec.origin)
            digest.update(f"\0{spec.origin}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    except (OSError, ImportError, ValueError) as exc:
        log.debug("term cache off: the parsing code cannot be hashed (%s)", exc)
        return None
    return digest.hexdigest()


def _stamp(info: os.stat_result) -> _Stamp:
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def _encode(parsed: ParsedTerm) -> list[Any]:
    """One valid file's parse as a flat record: pairs laid end to end, and the names and links
    stored as their lines alone when they are what the term says (every valid file: only
    the lines are not in the Term). Fewer objects to build is most of a warm load's time."""
    term = parsed.term
    assert term is not None  # only valid files are kept
    lines: list[Any] = [line for _kind, _value, line in parsed.names[1:]]
    if parsed.names != _names(term, lines):
        lines = [list(name) for name in parsed.names]
    links: list[Any] = [line for _slug, line in parsed.related]
    if [slug for slug, _line in parsed.related] != list(term.related):
        links = [list(link) for link in parsed.related]
    return [
        term.title,
        term.summary,
        term.definition,
        term.category,
        term.difficulty,
        term.added.year,
        term.added.week,
        term.related,
        [part for s in term.sources for part in (s.title, s.url)],
        [part for a in term.aliases for part in (a.name, a.lang)],
        [part for s in term.sections for part in (s.title, s.markdown)],
        term.subject,
        term.preheader,
        lines,
        links,
    ]


def _names(term: Term, lines: list[Any]) -> list[tuple[str, str, int | None]]:
    """The names a valid file declares, given the line of its title and of each alias."""
    if len(lines) != len(term.aliases) + 1:
        return []
    names = [("slug", term.slug, None), ("title", term.title, lines[0])]
    names.extend(("alias", a.name, line) for a, line in zip(term.aliases, lines[1:], strict=True))
    return names


def _decode(record: list[Any], path: Path) -> ParsedTerm:
    (title, summary, definition, category, difficulty, year, week, related) = record[:8]
    (sources, aliases, sections, subject, preheader, lines, links) = record[8:]
    slug = path.stem
    pairs = range(0, len(sections), 2)
    term = Term(
        slug,
        title,
        summary,
        definition,
        category,
        difficulty,
        IsoWeek(year, week),
        tuple(related),
        tuple([Source(sources[i], sources[i + 1]) for i in range(0, len(sources), 2)]),
        tuple([Alias(aliases[i], aliases[i + 1]) for i in range(0, len(aliases), 2)]),
        tuple([Section(sections[i], sections[i + 1]) for i in pairs]),
        path,
        subject,
        preheader,
    )
    if lines and isinstance(lines[0], list):
        names = [(kind, value, line) for kind, value, line in lines]
    else:
        names = _names(term, lines)
    if links and isinstance(links[0], list):
        linked = [(other, line) for other, line in links]
    else:
        linked = list(zip(related, links, strict=True))
    return ParsedTerm(path, slug, term, names, linked)


class TermCache:
    """The cached parse of one terms folder: read once as a load starts, written once at its end
    when anything changed. Entry: [size, mtime_ns, ctime_ns, inode, settled, sha256, record].

    Anything wrong with the file — missing, unreadable, truncated, another format, another
    code version, another folder, a shape that does not decode — makes it an empty cache that
    the load then rewrites: it is never partly trusted.
    """

    def __init__(self, directory: Path, *, enabled: bool = True) -> None:
        self._directory = str(Path(os.path.abspath(directory)))
        self._version = code_version() if enabled else None
        where = Path(self._directory).parent / CACHE_DIR_NAME
        name = hashlib.sha256(self._directory.encode()).hexdigest()[:16]
        self.file: Path | None = where / f"terms-{name}.json" if self._version else None
        self._entries: dict[str, list[Any]] = self._read() if self.file else {}
        self._kept: dict[str, list[Any]] = {}
        self._changed = False

    def _read(self) -> dict[str, list[Any]]:
        assert self.file is not None
        try:
            with open(self.file, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.debug("term cache %s not read: %s", self.file, exc)
            return {}
        try:
            data = orjson.loads(raw)
            if (
                data.get("format") != FORMAT
                or data.get("version") != self._version
                or data.get("directory") != self._directory
                or not isinstance(data.get("entries"), dict)
                or not all(isinstance(e, list) and len(e) == 7 for e in data["entries"].values())
            ):
                log.debug("term cache %s is of another format, code or folder", self.file)
                return {}
            entries: dict[str, list[Any]] = data["entries"]
            return entries
        except (orjson.JSONDecodeError, AttributeError) as exc:
            log.debug("term cache %s is unreadable: %s", self.file, exc)
            return {}

    def fresh(self, name: str, info: os.stat_result, path: Path) -> ParsedTerm | None:
        """What `name` yielded when it was cached, if its stamp is unchanged and settled: then
        the file is not opened at all."""
        entry = self._entries.get(name)
        if entry is None or not entry[4] or entry[:4] != list(_stamp(info)):
            return None
        return self._use(name, entry, path)

    def same_content(
        self, name: str, info: os.stat_result, content: bytes, path: Path, started_ns: int
    ) -> tuple[ParsedTerm | None, str]:
        """(what `name` yielded when cached if its content is unchanged, else None; the
        content's hash). A file touched, checked out again or copied keeps its parse."""
        digest = hashlib.sha256(content).hexdigest()
        entry = self._entries.get(name)
        if entry is None or entry[5] != digest:
            return None, digest
        parsed = self._use(name, entry, path)
        if parsed is not None:
            self.keep(name, info, digest, parsed, started_ns)
        return parsed, digest

    def _use(self, name: str, entry: list[Any], path: Path) -> ParsedTerm | None:
        try:
            parsed = _decode(entry[6], path)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            log.debug("term cache entry %s does not decode: %s", name, exc)
            self._changed = True
            return None
        self._kept[name] = entry
        return parsed

    def keep(
        self, name: str, info: os.stat_result, digest: str, parsed: ParsedTerm, started_ns: int
    ) -> None:
        """Cache what the valid file `name` yielded, stamped as `info` saw it before the read."""
        if self.file is None:
            return
        stamp = _stamp(info)
        settled = max(info.st_mtime_ns, info.st_ctime_ns) < started_ns - _RACY_NS
        entry = [*stamp, settled, digest, _encode(parsed)]
        old = self._entries.get(name)
        if old is None or old[:6] != entry[:6]:
            self._changed = True
        self._kept[name] = entry

    def save(self) -> None:
        """Write the entries kept by this load, if they differ from what was read: atomically
        (a temporary file renamed over the old), so a reader never sees half of it."""
        if self.file is None or not (self._changed or self._kept.keys() != self._entries.keys()):
            return
        payload = {
            "format": FORMAT,
            "version": self._version,
            "directory": self._directory,
            "entries": self._kept,
        }
        folder = self.file.parent
        temp: str | None = None
        try:
            data = orjson.dumps(payload)
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                # Ignored by git and skipped by backup tools wherever the project lives.
                (folder / ".gitignore").write_text("# made by digest: its parse cache\n*\n")
                (folder / "CACHEDIR.TAG").write_text(
                    "Signature: 8a477f597d28d172789f06886806bc55\n# digest's parse cache\n"
                )
            fd, temp = tempfile.mkstemp(dir=folder, prefix=".terms-", suffix=".tmp")
            # No fsync: after a crash a lost or truncated cache is only a slower next load.
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(temp, self.file)
            temp = None
        except (OSError, TypeError) as exc:  # TypeError: orjson met an int over 64 bits
            log.debug("term cache %s not written: %s", self.file, exc)
        finally:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
