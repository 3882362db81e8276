"""A large cold load parses in two processes (`store.terms._in_two`) and gives exactly what one
process gives: the same terms, the same errors in the same order, the same cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import STARTER_TERMS, term_text

REPO = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter: a fork is only made from a process with one thread, and the test
# runner has more. Loads the folder in two processes (every file a job), then in one, and
# prints what each gave and how many forks were made.
_COMPARE = """
import json, os, sys
from pathlib import Path
from digest.store import terms, term_cache
from digest.store.terms import read_glossary

forks = []
real_fork = os.fork
def counting_fork():
    pid = real_fork()
    if pid:
        forks.append(pid)
    return pid
os.fork = counting_fork

def shown(result):
    glossary, errors = result
    return {
        "terms": [repr(t) for t in glossary],
        "paths": [str(t.path) for t in glossary],
        "left_out": sorted(glossary.left_out),
        "errors": [str(e) for e in errors],
        "lookup": [glossary.lookup(t.title) is t for t in glossary],
    }

folder = Path(sys.argv[1])
mode = sys.argv[2]
if mode == "child-fails":
    def broken(*args):
        raise RuntimeError("in the child")
    real_plain = terms._read_plain
    terms._read_plain = lambda *a: broken() if os.getpid() != parent else real_plain(*a)
parent = os.getpid()
terms.PARALLEL_FILES = 1
two = shown(read_glossary(folder))
cache_file = term_cache.TermCache(folder).file
entries = sorted(term_cache.TermCache(folder)._entries)
forked = len(forks)
terms.PARALLEL_FILES = 10**9
one = shown(read_glossary(folder, cache=False))
warm = shown(read_glossary(folder))
print(json.dumps({"forks": forked, "same": two == one, "warm": warm == one, "entries": entries,
                  "errors": one["errors"]}))
"""


def _broken_folder(make_terms) -> Path:  # type: ignore[no-untyped-def]
    files = {source.stem: source.read_text() for source in STARTER_TERMS.glob("*.md")}
    files.update(
        {
            "gamma": term_text("Gamma", difficulty="expert"),
            "delta": term_text("Delta", related=["no-such-term"]),
            "bad-yaml": "---\ntitle: [unclosed\n---\n\n## Why it matters\n\nx\n",
            "no-front": "just text\n",
            "Not_A_Slug": term_text("Odd Name"),
        }
    )
    folder = make_terms(files)
    (folder / "not-utf8.md").write_bytes(b"---\ntitle: \xff\n---\n")
    return folder


def _compare(folder: Path, mode: str = "two") -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _COMPARE, str(folder), mode],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_two_processes_give_what_one_gives(make_terms):
    folder = _broken_folder(make_terms)
    result = _compare(folder)
    assert result["forks"] == 1
    assert result["same"] is True and result["warm"] is True
    errors = "\n".join(result["errors"])  # type: ignore[arg-type]
    for expected in ("gamma.md", "delta.md", "bad-yaml.md", "no-front.md", "not-utf8.md"):
        assert expected in errors
    # Only files valid in themselves are cached (delta.md's unknown link is the folder's
    # error), whichever process parsed them.
    starter = {p.name for p in STARTER_TERMS.glob("*.md") if p.name.lower() != "readme.md"}
    assert set(result["entries"]) == starter | {"delta.md"}  # type: ignore[arg-type]


def test_a_child_that_fails_costs_nothing_but_time(make_terms):
    folder = _broken_folder(make_terms)
    result = _compare(folder, "child-fails")
    assert result["forks"] == 1
    assert result["same"] is True and result["warm"] is True


def test_a_small_glossary_or_a_threaded_process_parses_in_one(make_terms, monkeypatch):
    from digest.store import terms

    folder = make_terms({"alpha": term_text("Alpha"), "beta": term_text("Beta")})
    forks: list[int] = []
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or 0)
    assert len(terms.read_glossary(folder)[0]) == 2  # below PARALLEL_FILES
    monkeypatch.setattr(terms, "PARALLEL_FILES", 1)
    monkeypatch.setattr(terms.threading, "active_count", lambda: 2)  # as under a web server
    assert len(terms.read_glossary(folder, cache=False)[0]) == 2
    assert forks == []
