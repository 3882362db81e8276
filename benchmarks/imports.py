"""The CSV benchmark: `digest subscribers import FILE` and `export` beside their floors
(benchmarks/import_floor.py) on the same generated file and the same database state.

Each side runs as a child process, measured with wait4 and VmHWM, on its own fresh database
prepared identically; export runs on the table the import left. Correctness: both imports end
with the same table and the same counts, and both exports write the same bytes.

    python -m benchmarks.imports --sizes 100000 1000000 --backends sqlite postgresql
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text

from benchmarks.common import ChildRun, Goal, base_env, postgres_schema, run_child, text_table
from benchmarks.data import DEFAULT_SEED, subscriber_email
from digest.store import db

__all__ = ["ImportResult", "imports_goals", "imports_table", "run_imports", "write_csv"]

RATIO = 3.0  # issue 17, goal 3: import and export within 3x their floors
RSS_GROWTH = 1.5  # peak RSS at the largest size at most this times the smallest size's

_FIRST = ["Ann", "Bram", "Chen", "Dana", "Eva", "Femke", "Gita", "Hugo", "Ines", "Joost", "Kai"]
_LAST = ["de Vries", "Jansen", "Bakker", "Visser", "O'Brien", "Müller", "García", "Ødegaard"]


@dataclass(frozen=True, slots=True)
class ImportResult:
    backend: str
    rows: int
    digest: ChildRun
    floor: ChildRun
    export: ChildRun
    export_floor: ChildRun
    counts: dict[str, int]  # what digest reported
    floor_counts: dict[str, int]  # what the floor computed
    problems: tuple[str, ...]

    @property
    def ratio(self) -> float:
        return self.digest.seconds / self.floor.seconds

    @property
    def export_ratio(self) -> float:
        return self.export.seconds / self.export_floor.seconds


def write_csv(path: Path, rows: int, seed: int = DEFAULT_SEED) -> None:
    """A subscriber file of `rows` rows (email,name,status,timezone), the same for a seed.

    About 1% of the rows have an address that is not one, 0.1% repeat the address of the row
    before, 0.5% say unsubscribed, 10% give a time zone, 60% a name (some needing quotes);
    every seventh address is typed in capitals, which the import lower-cases.
    """
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("email,name,status,timezone\n")
        for i in range(rows):
            email = subscriber_email(i)
            if i % 100 == 37:
                email = email.replace("@", ".at.")
            elif i % 1000 == 500:
                email = subscriber_email(i - 1)
            if i % 7 == 3:
                email = email.upper()
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" if rng.random() < 0.6 else ""
            if name and i % 11 == 0:
                name = f'"{name}, Jr."'
            status = "unsubscribed" if i % 200 == 3 else ""
            zone = "Europe/Amsterdam" if i % 10 == 4 else ""
            fh.write(f"{email},{name},{status},{zone}\n")


def _existing(engine: Engine, rows: int) -> None:
    """Addresses of the file already stored: 1% unsubscribed (the import keeps them so), 1%
    bounced, 1% pending (it activates them) and 1% active under another name (it renames)."""
    when = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    stamp = db.subscribers.c.created_at.type.dialect_impl(engine.dialect).bind_processor(
        engine.dialect
    )
    at = stamp(when) if stamp is not None else when
    kinds = {1: "unsubscribed", 2: "bounced", 5: "pending", 6: "active"}
    values = [
        (subscriber_email(i), f"Old Name {i}", kinds[i % 100], "import", at, at)
        for i in range(rows)
        if i % 100 in kinds
    ]
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO subscribers (email, name, status, source, created_at, updated_at) "
            f"VALUES ({', '.join([mark] * 6)})",
            values,
        )


def _table_digest(url: str) -> str:
    """A hash of what the import decides: every row's address, name, status and time zone."""
    engine = db.make_engine(url)
    sha = hashlib.sha256()
    try:
        with engine.connect() as conn:
            result = conn.execution_options(yield_per=20_000).execute(
                text("SELECT email, name, status, timezone FROM subscribers ORDER BY email")
            )
            for row in result:
                sha.update(repr(tuple(row)).encode())
    finally:
        engine.dispose()
    return sha.hexdigest()


_SUMMARY = re.compile(
    r"added (\d+), updated (\d+), unchanged (\d+), kept unsubscribed/bounced/complained (\d+), "
    r"(\d+) errors?"
)


def _digest_counts(run: ChildRun) -> dict[str, int]:
    match = _SUMMARY.search(run.stdout)
    if match is None:
        return {}
    added, updated, unchanged, kept, errors = map(int, match.groups())
    return {
        "added": added,
        "updated": updated,
        "unchanged_or_kept": unchanged + kept,
        "errors": errors,
        "kept": kept,
    }


@contextmanager
def _database(run_dir: Path, name: str, backend: str, postgres_url: str | None) -> Iterator[str]:
    if backend == "sqlite":
        path = run_dir / f"{name}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    assert postgres_url is not None
    with postgres_schema(postgres_url) as url:
        yield url


def _prepare(url: str, rows: int) -> None:
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        _existing(engine, rows)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE subscribers")
                conn.commit()
    finally:
        engine.dispose()


def _measure(
    run_dir: Path,
    csv_file: Path,
    rows: int,
    backend: str,
    postgres_url: str | None,
    digest_repo: Path | None,
) -> ImportResult:
    problems: list[str] = []
    quiet = [] if digest_repo is not None else ["--quiet"]  # before --quiet existed
    with (
        _database(run_dir, "digest", backend, postgres_url) as url,
        _database(run_dir, "floor", backend, postgres_url) as floor_url,
    ):
        _prepare(url, rows)
        _prepare(floor_url, rows)
        env = base_env(run_dir, url)
        floor = run_child(
            ["-m", "benchmarks.import_floor", "import", floor_url, str(csv_file)], env
        )
        digest = run_child(
            _digest(digest_repo, "import", str(csv_file), "--confirmed", *quiet), env
        )
        counts = _digest_counts(digest)
        floor_counts: dict[str, int] = {}
        if floor.returncode != 0:
            problems.append(f"floor exited {floor.returncode}: {floor.stderr.strip()[-300:]}")
        else:
            floor_counts = json.loads(floor.stdout)
        if not counts:
            problems.append(f"digest import said: {(digest.stdout + digest.stderr)[-300:]}")
        elif {k: counts[k] for k in floor_counts} != floor_counts:
            problems.append(f"counts differ: digest {counts}, floor {floor_counts}")
        if not problems and _table_digest(url) != _table_digest(floor_url):
            problems.append("the two imports left different tables")
        export = run_child(_digest(digest_repo, "export", *quiet), env)
        export_floor = run_child(["-m", "benchmarks.import_floor", "export", url], env)
        if export.returncode != 0 or export.stdout != export_floor.stdout:
            lines = len(export.stdout.splitlines()), len(export_floor.stdout.splitlines())
            problems.append(
                f"exports differ (exit {export.returncode}; {lines[0]} and {lines[1]} lines)"
            )
    return ImportResult(
        backend=backend,
        rows=rows,
        digest=digest,
        floor=floor,
        export=_without_output(export),
        export_floor=_without_output(export_floor),
        counts=counts,
        floor_counts=floor_counts,
        problems=tuple(problems),
    )


def _digest(repo: Path | None, *args: str) -> list[str]:
    """The child's arguments for `digest subscribers ARGS`, from `repo` when given. `-m` would
    put the working folder (this checkout) first on sys.path, so another checkout is put
    ahead of it by hand."""
    if repo is None:
        return ["-m", "digest.cli", "subscribers", *args]
    argv = ["digest", "subscribers", *args]
    return [
        "-c",
        f"import runpy, sys; sys.path.insert(0, {str(repo)!r}); sys.argv = {argv!r}; "
        "runpy.run_module('digest.cli', run_name='__main__')",
    ]


def _without_output(run: ChildRun) -> ChildRun:
    """The run without its (large) stdout, once it has been compared."""
    return ChildRun(run.seconds, run.cpu, run.peak_rss_mb, run.returncode, "", run.stderr)


def run_imports(
    workdir: Path,
    sizes: tuple[int, ...] = (100_000, 1_000_000),
    *,
    backends: tuple[str, ...] = ("sqlite", "postgresql"),
    postgres_url: str | None = None,
    seed: int = DEFAULT_SEED,
    digest_repo: Path | None = None,
) -> list[ImportResult]:
    """Import and export each size on each backend (PostgreSQL in scratch schemas that are
    dropped afterwards); `digest_repo` runs another checkout's digest (a "before" figure)."""
    results = []
    for rows in sizes:
        run_dir = workdir / f"imports-{rows}"
        run_dir.mkdir(parents=True, exist_ok=True)
        csv_file = run_dir / "subscribers.csv"
        write_csv(csv_file, rows, seed)
        try:
            for backend in backends:
                if backend == "postgresql" and postgres_url is None:
                    continue
                results.append(
                    _measure(run_dir, csv_file, rows, backend, postgres_url, digest_repo)
                )
        finally:
            csv_file.unlink(missing_ok=True)
    return results


def imports_goals(results: list[ImportResult]) -> list[Goal]:
    goals = []
    for r in results:
        where = f"{r.backend}, {r.rows:,} rows"
        goals.append(
            Goal(
                f"CSV import ≤ {RATIO:g}× floor ({where})",
                r.ratio <= RATIO,
                f"{r.ratio:.2f}× ({r.digest.seconds:.2f} s vs {r.floor.seconds:.2f} s)",
            )
        )
        goals.append(
            Goal(
                f"CSV export ≤ {RATIO:g}× floor ({where})",
                r.export_ratio <= RATIO,
                f"{r.export_ratio:.2f}× ({r.export.seconds:.2f} s vs "
                f"{r.export_floor.seconds:.2f} s)",
            )
        )
        goals.append(
            Goal(
                f"CSV import and export correct ({where})",
                not r.problems,
                "; ".join(r.problems) or "same counts, same table, same export",
                correctness=True,
            )
        )
    for backend in sorted({r.backend for r in results}):
        mine = sorted((r for r in results if r.backend == backend), key=lambda r: r.rows)
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        for what, a, b in (
            ("import", small.digest, large.digest),
            ("export", small.export, large.export),
        ):
            goals.append(
                Goal(
                    f"CSV {what} memory flat ({backend}: {large.rows:,} rows ≤ "
                    f"{RSS_GROWTH:g}× {small.rows:,})",
                    b.peak_rss_mb <= RSS_GROWTH * a.peak_rss_mb,
                    f"{b.peak_rss_mb:.0f} MB vs {a.peak_rss_mb:.0f} MB",
                )
            )
    return goals


def imports_table(results: list[ImportResult]) -> str:
    header = [
        "backend", "rows", "import s", "floor s", "ratio", "RSS MB",
        "export s", "floor s", "ratio", "RSS MB", "counts",
    ]  # fmt: skip
    rows: list[list[str]] = []
    for r in results:
        c = r.counts
        counts = (
            f"+{c.get('added', 0):,} ~{c.get('updated', 0):,} ={c.get('unchanged_or_kept', 0):,} "
            f"!{c.get('errors', 0):,}"
            if c
            else "-"
        )
        rows.append(
            [
                r.backend, f"{r.rows:,}", f"{r.digest.seconds:.2f}", f"{r.floor.seconds:.2f}",
                f"{r.ratio:.2f}", f"{r.digest.peak_rss_mb:.0f}", f"{r.export.seconds:.2f}",
                f"{r.export_floor.seconds:.2f}", f"{r.export_ratio:.2f}",
                f"{r.export.peak_rss_mb:.0f}",
                counts + ("  PROBLEM: " + "; ".join(r.problems) if r.problems else ""),
            ]
        )  # fmt: skip
    return (
        text_table(header, rows)
        + "\ncounts: +added ~updated =unchanged or kept suppressed !errors (bad rows, repeats)"
    )


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--postgres-url", default=os.environ.get("DIGEST_TEST_POSTGRES_URL"))
    parser.add_argument("--digest-repo", type=Path, help="measure this checkout's digest")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="digest-imports-") as scratch:
        results = run_imports(
            args.workdir or Path(scratch),
            tuple(args.sizes),
            backends=tuple(args.backends),
            postgres_url=args.postgres_url,
            digest_repo=args.digest_repo,
        )
    print(imports_table(results))
    for goal in imports_goals(results):
        print(f"{'met   ' if goal.met else 'MISSED'} {goal.name}: {goal.measured}")


if __name__ == "__main__":
    main()
