"""Reading the glossary from disk: the term files of a folder, read safely, into a `Glossary`.

The file-system edge of the loader. Only regular files of bounded size are read, judged before
anything is opened; what a file says is judged by the pure rules in `digest.core.term_rules`.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import marshal
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from digest.core.term_folder import ParsedTerm, assemble
from digest.model.glossary import Glossary, GlossaryError, InvalidGlossary
from digest.store.term_cache import TermCache, record_of

__all__ = ["MAX_TERM_BYTES", "load_glossary", "read_glossary"]

# The largest term file read, judged from its size before reading. The longest starter term is
# under 3 KB and a mail over 102 KB is clipped by Gmail anyway; without a limit a 50 MB file
# passed validation in a second and then cost the build minutes and gigabytes before a size
# gate refused it.
MAX_TERM_BYTES = 256 * 1024


# Files to parse (not served from the cache) from which a load parses them in two processes:
# below, forking and handing the results back cost more than the second core saves.
PARALLEL_FILES = 1000

_FILE_KINDS = (
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISCHR, "device"),
    (stat.S_ISBLK, "device"),
    (stat.S_ISSOCK, "socket"),
)
# Never follow a link, never wait on a pipe swapped in between the lstat and the open.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _not_regular(path: Path, mode: int) -> GlossaryError:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "special file")
    if kind == "symlink":
        # Every link, not only those leading out: where a link leads can change between the
        # check and the open, and a link to /dev/zero or a pipe would hang or exhaust us.
        advice = (
            "links are not followed, so a term cannot come from outside the folder: "
            "replace the link with the file itself"
        )
    else:
        advice = (
            "only regular files are read as terms: remove it, or rename it so its name does "
            "not end in .md"
        )
    return GlossaryError(path, None, "file", f"not a regular file ({kind}); {advice}")


def _too_big(path: Path, size: int) -> GlossaryError:
    message = (
        f"is {size:,} bytes, over the {MAX_TERM_BYTES:,}-byte ({MAX_TERM_BYTES // 1024} KB) "
        "limit for a term file; shorten it"
    )
    return GlossaryError(path, None, "file", message)


def _term_bytes(path: Path) -> bytes | GlossaryError:
    """The bytes of `path` when it is a regular file of at most MAX_TERM_BYTES, else the error.

    Judged from `lstat` before anything is opened: opening a named pipe blocks until a writer
    comes, a device such as /dev/zero reads until memory runs out, a symlink may lead out of
    the folder, and a huge file would pass only to cost the build minutes. The open then refuses
    links and never blocks, and what was opened is checked again, so an entry swapped in
    between (an editor replaces files as it saves) is judged as what it is by then.
    """
    try:
        info = os.lstat(path)
    except OSError as exc:
        return GlossaryError(path, None, "file", f"cannot read: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return _not_regular(path, info.st_mode)
    if info.st_size > MAX_TERM_BYTES:
        return _too_big(path, info.st_size)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link made since the lstat
            return _not_regular(path, stat.S_IFLNK)
        return GlossaryError(path, None, "file", f"cannot read: {exc.strerror}")
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            return _not_regular(path, opened.st_mode)
        if opened.st_size > MAX_TERM_BYTES:
            return _too_big(path, opened.st_size)
        # The size and a byte more, then on to the end, bounded: a file still growing is read
        # no further than the limit. (Not MAX_TERM_BYTES at once: that allocates 256 KB a file.)
        data = os.read(fd, opened.st_size + 1)
        # A shorter read than asked is the end of a regular file; only a file that grew since
        # the fstat is read on (and a 64 KB buffer allocated per file was a tenth of a read).
        while opened.st_size < len(data) <= MAX_TERM_BYTES and (more := os.read(fd, 65536)):
            data += more
    except OSError as exc:
        return GlossaryError(path, None, "file", f"cannot read: {exc.strerror}")
    finally:
        os.close(fd)
    return data if len(data) <= MAX_TERM_BYTES else _too_big(path, len(data))


def _read_term(
    path: Path,
    name: str,
    info: os.stat_result | None,
    cache: TermCache,
    started_ns: int,
    collect: bool,
) -> tuple[ParsedTerm | None, list[GlossaryError]]:
    """Read one file (`path`, named `name`): what it declares, and every error found in it;
    from the cache when its stamp (`info`, taken before the read) or else its content is
    unchanged."""
    if info is not None and stat.S_ISREG(info.st_mode):
        cached = cache.fresh(name, info, path)
        if cached is not None:
            return cached, []
    raw = _term_bytes(path)
    if isinstance(raw, GlossaryError):
        return None, [raw]
    if info is None:
        return _parse(raw, path, collect)
    cached, digest = cache.same_content(name, info, raw, path, started_ns)
    if cached is not None:
        return cached, []
    parsed, errors = _parse(raw, path, collect)
    if parsed is not None and parsed.term is not None and not errors:
        cache.keep(name, info, digest, parsed, started_ns)
    return parsed, errors


def _parse(raw: bytes, path: Path, collect: bool) -> tuple[ParsedTerm | None, list[GlossaryError]]:
    """`parse_term`, with the cyclic collector on again if the caller had it on: PyYAML's
    loaders and node trees do hold cycles, and a cold load left uncollected grows to 370 MB."""
    # Imported here: the rules of one file need pydantic and PyYAML, a fifth of a second to
    # import, and a load served from the cache parses nothing.
    from digest.core.term_rules import parse_term

    if not collect:
        return parse_term(raw, path)
    gc.enable()
    try:
        return parse_term(raw, path)
    finally:
        gc.disable()


def _term_files(directory: Path) -> list[tuple[str, os.stat_result | None]]:
    """(name, lstat or None when it cannot be had) of every `*.md` but README.md, by name:
    what `sorted(directory.glob("*.md"))` lists, without a Path and a comparison per file."""
    found: list[tuple[str, os.stat_result | None]] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if not name.endswith(".md") or name.lower() == "readme.md":
                    continue
                try:
                    found.append((name, entry.stat(follow_symlinks=False)))
                except OSError:  # gone or unreadable: the read reports it as today
                    found.append((name, None))
    except OSError:  # as glob does: a folder that cannot be listed lists nothing
        return []
    found.sort(key=lambda item: item[0])
    return found


_Job = tuple[int, Path, str, os.stat_result | None]  # (index in the folder, path, name, lstat)


def _read_plain(job: _Job, cache: TermCache, started_ns: int, collect: bool) -> tuple[Any, ...]:
    """What `_read_term` finds in one file the cache has not served by its stamp, as plain
    values (`marshal` carries them between processes): (0, errors) nothing to use; (1, names,
    related, errors) a file with errors; (2, digest, record) a valid file; (3, digest) the
    content cached already."""
    _index, path, name, info = job
    raw = _term_bytes(path)
    if isinstance(raw, GlossaryError):
        return (0, _plain_errors([raw], path))
    digest = None
    if info is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if cache.holds(name, digest):
            return (3, digest)
    parsed, errors = _parse(raw, path, collect)
    if parsed is None:
        return (0, _plain_errors(errors, path))
    if parsed.term is not None and not errors:
        return (2, digest, record_of(parsed))
    return (1, parsed.names, parsed.related, _plain_errors(errors, path))


def _plain_errors(errors: list[GlossaryError], path: Path) -> list[tuple[Any, ...]]:
    return [(None if e.path == path else str(e.path), e.line, e.field, e.message) for e in errors]


def _from_plain(
    outcome: tuple[Any, ...], job: _Job, cache: TermCache, started_ns: int, collect: bool
) -> tuple[ParsedTerm | None, list[GlossaryError]]:
    """`_read_plain`'s outcome as `_read_term` would have returned it."""
    _index, path, name, info = job
    kind = outcome[0]
    if kind == 2:
        return cache.restore(name, info, outcome[1], outcome[2], path, started_ns), []
    if kind == 3:
        assert info is not None
        cached = cache.same_digest(name, info, outcome[1], path, started_ns)
        if cached is not None:
            return cached, []
        return _read_term(path, name, None, cache, started_ns, collect)  # an entry gone bad
    errors = [
        GlossaryError(path if at is None else Path(at), line, field, message)
        for at, line, field, message in outcome[-1]
    ]
    if kind == 1:
        return ParsedTerm(path, path.stem, None, outcome[1], outcome[2]), errors
    return None, errors


def _cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _in_two(
    jobs: list[_Job], cache: TermCache, started_ns: int, collect: bool
) -> list[tuple[ParsedTerm | None, list[GlossaryError]]] | None:
    """Read and parse `jobs`: the first half here, the second in a forked child at once; None
    when that is not worth it or not safe, and the caller reads them all itself.

    Only in a process with one thread (a fork copies no other thread, and one holding a lock
    would leave it held in the child for ever: the web app and the scheduler load serially),
    on Linux, with two cores to run on and enough files to pay for the fork. The child hands
    back plain values and exits without running any clean-up of the parent's; whatever goes
    wrong in it, its half is read here instead, so the result never depends on it.
    """
    if (
        len(jobs) < PARALLEL_FILES
        or sys.platform != "linux"
        or threading.active_count() != 1
        or _cores() < 2
    ):
        return None
    split = len(jobs) // 2
    mine, theirs = jobs[:split], jobs[split:]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse, write, leave at once
        code = 1
        try:
            os.close(read_fd)
            data = marshal.dumps([_read_plain(job, cache, started_ns, collect) for job in theirs])
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        results = [
            _read_term(path, name, info, cache, started_ns, collect) for _, path, name, info in mine
        ]
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
    finally:
        _, status = os.waitpid(pid, 0)
    outcomes: Any = None
    if status == 0:
        try:
            outcomes = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            outcomes = None
    if type(outcomes) is not list or len(outcomes) != len(theirs):
        outcomes = [_read_plain(job, cache, started_ns, collect) for job in theirs]
    results.extend(
        _from_plain(outcome, job, cache, started_ns, collect)
        for outcome, job in zip(outcomes, theirs, strict=True)
    )
    return results


def read_glossary(
    directory: Path | str, *, cache: bool = True
) -> tuple[Glossary, list[GlossaryError]]:
    """Read every `*.md` in `directory`; return the valid terms and all errors found.

    Terms with errors are left out of the glossary, so a caller that can live with a partial
    glossary (e.g. `terms list`) still works while an editor fixes a file. What valid files
    yielded is kept in `<project>/.digest-cache/` (`digest.store.term_cache`) unless `cache` is
    false; a file with an error is never kept, so it is read and reported on every load, and
    the folder-wide rules run over every term, cached or not. Many files to parse are parsed
    in two processes (`_in_two`), with the same result.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return Glossary([]), [GlossaryError(directory, None, "terms", "folder does not exist")]
    started_ns = time.time_ns()  # before any file is looked at: what "settled" is judged by
    # A load from the cache builds hundreds of thousands of small objects, none in a cycle;
    # left on, the cyclic collector walks the growing heap again and again (a third of a warm
    # load). It runs again while a file is parsed (`_parse`).
    collecting = gc.isenabled()
    gc.disable()
    try:
        term_cache = TermCache(directory, enabled=cache)
        found: list[tuple[ParsedTerm | None, list[GlossaryError]] | None] = []
        jobs: list[_Job] = []
        # `directory / name` parses the name again as a path: a tenth of a warm load.
        child = getattr(directory, "_make_child_relpath", directory.joinpath)
        for name, info in _term_files(directory):
            path = child(name)
            cached = None
            if info is not None and stat.S_ISREG(info.st_mode):
                cached = term_cache.fresh(name, info, path)
            if cached is not None:
                found.append((cached, []))
            else:
                jobs.append((len(found), path, name, info))
                found.append(None)
        read = _in_two(jobs, term_cache, started_ns, collecting)
        if read is None:
            read = [
                _read_term(path, name, info, term_cache, started_ns, collecting)
                for _, path, name, info in jobs
            ]
        for (index, *_), outcome in zip(jobs, read, strict=True):
            found[index] = outcome
        parsed: list[ParsedTerm] = []
        errors: list[GlossaryError] = []
        for result in found:
            assert result is not None
            item, problems = result
            errors.extend(problems)
            if item is not None:
                parsed.append(item)
        term_cache.save()
        return assemble(parsed, errors)
    finally:
        if collecting:
            # What the load built lives as long as the glossary: handed to the oldest
            # generation as it is, or the first young collection after `enable` walks every
            # object of it (a fifth of a warm load) only to find nothing to free.
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def load_glossary(directory: Path | str, *, cache: bool = True) -> Glossary:
    """The whole glossary, or `InvalidGlossary` carrying every error in the folder."""
    glossary, errors = read_glossary(directory, cache=cache)
    if errors:
        raise InvalidGlossary(errors)
    return glossary
