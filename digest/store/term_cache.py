"""The glossary's parse cache: what each valid term file yielded, kept between runs in the project.

Like Pelican's content cache: one file per terms folder under `<project>/.digest-cache/`, each
entry keyed by its file's stamp and content hash, the whole invalidated by the parsing code's hash.
Only valid files are kept; the loader runs every folder-wide rule over what comes back.

The file is `marshal` data behind a magic line, its length and a CRC-32, not JSON: it decodes
in half orjson's time (a warm load's largest single cost). Safe because marshal builds plain
values and never runs anything (unlike pickle: no constructor, no import, no call), the
checksum keeps any file this code did not write whole from reaching it, the header must name
this code version and folder, and every value is then used only through `_decode`, which
refuses a shape it does not expect. Whoever could forge a matching file can write the term
files themselves; what the cache holds is no more trusted than they are.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import marshal
import os
import sys
import tempfile
import unicodedata
import zlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from digest.core.term_folder import ParsedTerm
from digest.model.glossary import Alias, Section, Source, Term
from digest.model.weeks import IsoWeek

__all__ = ["CACHE_DIR_NAME", "FORMAT", "TermCache", "code_version", "record_of"]

log = logging.getLogger(__name__)

CACHE_DIR_NAME = ".digest-cache"
# The layout of the cache file below; raise it whenever the entry's shape changes.
FORMAT = 3
# What a cache file starts with, then the payload's length and CRC-32 (8 bytes each, little-endian).
_MAGIC = b"digest term cache\n"
_HEAD = len(_MAGIC) + 16

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


def _encode(parsed: ParsedTerm) -> tuple[Any, ...]:
    """One valid file's parse as a flat record: pairs laid end to end, and the names and links
    stored as their lines alone when they are what the term says (every valid file: only
    the lines are not in the Term). Fewer objects to build is most of a warm load's time.
    The strings most terms share (category, difficulty, section titles, languages) are
    interned, so marshal writes each once and a load makes (and frees at exit) one of each."""
    term = parsed.term
    assert term is not None  # only valid files are kept
    lines: tuple[Any, ...] = tuple([line for _kind, _value, line in parsed.names[1:]])
    if parsed.names != _names(term, lines):
        lines = tuple(parsed.names)
    links: tuple[Any, ...] = tuple([line for _slug, line in parsed.related])
    if [slug for slug, _line in parsed.related] != list(term.related):
        links = tuple(parsed.related)
    return (
        term.title,
        term.summary,
        term.definition,
        sys.intern(term.category),
        sys.intern(term.difficulty),
        term.added.year,
        term.added.week,
        term.related,
        tuple([part for s in term.sources for part in (s.title, s.url)]),
        tuple([part for a in term.aliases for part in (a.name, _shared(a.lang))]),
        tuple([part for s in term.sections for part in (sys.intern(s.title), s.markdown)]),
        term.subject,
        term.preheader,
        term.pronunciation,
        term.did_you_know,
        lines,
        links,
    )


def _shared(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


def record_of(parsed: ParsedTerm) -> tuple[Any, ...]:
    """A valid file's parse as plain values (what the cache keeps), which `TermCache.restore`
    turns back into an equal ParsedTerm."""
    return _encode(parsed)


def _names(term: Term, lines: Sequence[Any]) -> list[tuple[str, str, int | None]]:
    """The names a valid file declares, given the line of its title and of each alias."""
    if len(lines) != len(term.aliases) + 1:
        return []
    names = [("slug", term.slug, None), ("title", term.title, lines[0])]
    names.extend(("alias", a.name, line) for a, line in zip(term.aliases, lines[1:], strict=True))
    return names


_new = object.__new__
_set = object.__setattr__


def _decode(
    record: tuple[Any, ...], path: Path, slug: str, weeks: dict[tuple[int, int], IsoWeek]
) -> ParsedTerm:
    """The ParsedTerm of a cached record, built without re-running what was checked before it
    was cached: the frozen Term and Section are filled in directly (half the cost of their
    `__init__`, which only assigns: tests/test_term_cache.py keeps it so), each week is made
    (and validated) once per load, and the names and links are left for the folder rules to
    derive only if they report something."""
    (title, summary, definition, category, difficulty, year, week, related) = record[:8]
    (sources, aliases, sections, subject, preheader, pronunciation, did_you_know) = record[8:15]
    (lines, links) = record[15:]
    added = weeks.get((year, week))
    if added is None:
        added = weeks[year, week] = IsoWeek(year, week)
    if type(related) is not tuple:
        raise TypeError("related is not a tuple")
    texts = []
    for i in range(0, len(sections), 2):
        section = _new(Section)
        _set(section, "__dict__", {"title": sections[i], "markdown": sections[i + 1]})
        texts.append(section)
    term = _new(Term)
    _set(
        term,
        "__dict__",
        {
            "slug": slug,
            "title": title,
            "summary": summary,
            "definition": definition,
            "category": category,
            "difficulty": difficulty,
            "added": added,
            "related": related,
            "sources": tuple(map(Source, sources[::2], sources[1::2])),
            "aliases": tuple(map(Alias, aliases[::2], aliases[1::2])),
            "sections": tuple(texts),
            "path": path,
            "subject": subject,
            "preheader": preheader,
            "pronunciation": pronunciation,
            "did_you_know": did_you_know,
        },
    )
    if lines and type(lines[0]) is tuple:
        names = [(kind, value, line) for kind, value, line in lines]
        return ParsedTerm(path, slug, term, names, [(other, line) for other, line in links])
    if links and type(links[0]) is tuple:
        linked = [(other, line) for other, line in links]
        return ParsedTerm(path, slug, term, _names(term, lines), linked)
    if len(lines) != len(term.aliases) + 1 or len(links) != len(related):
        raise ValueError("the lines do not match the names and links")
    return ParsedTerm.of_valid(path, term, lines, links)


class TermCache:
    """The cached parse of one terms folder: read once as a load starts, written once at its end
    when anything changed. Entry: (stamp, settled, sha256, record), stamp as `_stamp` gives it.

    Anything wrong with the file — missing, unreadable, truncated, another format, another
    code version, another folder, a shape that does not decode — makes it an empty cache that
    the load then rewrites: it is never partly trusted.
    """

    def __init__(self, directory: Path, *, enabled: bool = True) -> None:
        self._directory = str(Path(os.path.abspath(directory)))
        self._version = code_version() if enabled else None
        where = Path(self._directory).parent / CACHE_DIR_NAME
        name = hashlib.sha256(self._directory.encode()).hexdigest()[:16]
        self.file: Path | None = where / f"terms-{name}.marshal" if self._version else None
        self._entries: dict[str, tuple[Any, ...]] = self._read() if self.file else {}
        self._kept: dict[str, tuple[Any, ...]] = {}
        self._changed = False
        self._weeks: dict[tuple[int, int], IsoWeek] = {}

    def _read(self) -> dict[str, tuple[Any, ...]]:
        assert self.file is not None
        try:
            with open(self.file, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.debug("term cache %s not read: %s", self.file, exc)
            return {}
        magic, size, crc = raw[: len(_MAGIC)], raw[len(_MAGIC) : _HEAD - 8], raw[_HEAD - 8 : _HEAD]
        payload = memoryview(raw)[_HEAD:]
        if (
            magic != _MAGIC
            or int.from_bytes(size, "little") != len(payload)
            or int.from_bytes(crc, "little") != zlib.crc32(payload)
        ):
            log.debug("term cache %s is not one this code wrote whole", self.file)
            return {}
        try:
            data = marshal.loads(payload)
        except (EOFError, ValueError, TypeError) as exc:
            log.debug("term cache %s is unreadable: %s", self.file, exc)
            return {}
        if (
            type(data) is not tuple
            or len(data) != 4
            or data[:3] != (FORMAT, self._version, self._directory)
            or type(data[3]) is not dict
            or not all(type(e) is tuple and len(e) == 4 for e in data[3].values())
        ):
            log.debug("term cache %s is of another format, code or folder", self.file)
            return {}
        entries: dict[str, tuple[Any, ...]] = data[3]
        return entries

    def fresh(self, name: str, info: os.stat_result, path: Path) -> ParsedTerm | None:
        """What `name` yielded when it was cached, if its stamp is unchanged and settled: then
        the file is not opened at all."""
        entry = self._entries.get(name)
        if entry is None or not entry[1] or entry[0] != _stamp(info):
            return None
        return self._use(name, entry, path)

    def same_content(
        self, name: str, info: os.stat_result, content: bytes, path: Path, started_ns: int
    ) -> tuple[ParsedTerm | None, str]:
        """(what `name` yielded when cached if its content is unchanged, else None; the
        content's hash). A file touched, checked out again or copied keeps its parse."""
        digest = hashlib.sha256(content).hexdigest()
        return self.same_digest(name, info, digest, path, started_ns), digest

    def holds(self, name: str, digest: str) -> bool:
        """Whether `name` is cached with the content hashed as `digest`."""
        entry = self._entries.get(name)
        return entry is not None and entry[2] == digest

    def same_digest(
        self, name: str, info: os.stat_result, digest: str, path: Path, started_ns: int
    ) -> ParsedTerm | None:
        """`same_content`, given the content's hash."""
        entry = self._entries.get(name)
        if entry is None or entry[2] != digest:
            return None
        parsed = self._use(name, entry, path)
        if parsed is not None:
            self.keep(name, info, digest, parsed, started_ns, entry[3])
        return parsed

    def restore(
        self,
        name: str,
        info: os.stat_result | None,
        digest: str | None,
        record: tuple[Any, ...],
        path: Path,
        started_ns: int,
    ) -> ParsedTerm:
        """The ParsedTerm of a valid file parsed elsewhere (another process of this load) as
        `record` (what `record_of` gave), kept like one parsed here when `info` is known."""
        parsed = _decode(record, path, name[:-3], self._weeks)
        if info is not None and digest is not None:
            self.keep(name, info, digest, parsed, started_ns, record)
        return parsed

    def _use(self, name: str, entry: tuple[Any, ...], path: Path) -> ParsedTerm | None:
        try:
            parsed = _decode(entry[3], path, name[:-3], self._weeks)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            log.debug("term cache entry %s does not decode: %s", name, exc)
            self._changed = True
            return None
        self._kept[name] = entry
        return parsed

    def keep(
        self,
        name: str,
        info: os.stat_result,
        digest: str,
        parsed: ParsedTerm,
        started_ns: int,
        record: tuple[Any, ...] | None = None,
    ) -> None:
        """Cache what the valid file `name` yielded, stamped as `info` saw it before the read
        (`record`: its encoding, when it came from the cache and is known already)."""
        if self.file is None:
            return
        settled = max(info.st_mtime_ns, info.st_ctime_ns) < started_ns - _RACY_NS
        entry = (_stamp(info), settled, digest, _encode(parsed) if record is None else record)
        old = self._entries.get(name)
        if old is None or old[:3] != entry[:3]:
            self._changed = True
        self._kept[name] = entry

    def save(self) -> None:
        """Write the entries kept by this load, if they differ from what was read: atomically
        (a temporary file renamed over the old), so a reader never sees half of it."""
        if self.file is None or not (self._changed or self._kept.keys() != self._entries.keys()):
            return
        folder = self.file.parent
        temp: str | None = None
        try:
            payload = marshal.dumps((FORMAT, self._version, self._directory, self._kept))
            head = len(payload).to_bytes(8, "little") + zlib.crc32(payload).to_bytes(8, "little")
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
                fh.write(_MAGIC + head)
                fh.write(payload)
            os.replace(temp, self.file)
            temp = None
        except (OSError, ValueError) as exc:  # ValueError: marshal met a value it cannot write
            log.debug("term cache %s not written: %s", self.file, exc)
        finally:
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
