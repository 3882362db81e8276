"""`python -m benchmarks`: every benchmark beside its floor, their tables, and the goals of issue 17.

python -m benchmarks                 # the full run (~25 minutes on 2 cores)
python -m benchmarks --quick         # a smoke run (about a minute)
python -m benchmarks --only send     # or latency, replicas, imports, web, build, tracking, smtp

Each module under benchmarks/ measures one kind of work and says how it went as `Goal`s; this
file only picks the sizes, runs the modules in order and prints one table of goals at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.build import build_goals, build_table, run_build
from benchmarks.common import REPO, FakeSendGrid, Goal, postgres_reachable
from benchmarks.data import DEFAULT_SEED
from benchmarks.imports import imports_goals, imports_table, run_imports
from benchmarks.latency import latency_goals, latency_table, run_latency
from benchmarks.replicas import replicas_goals, replicas_table, run_replicas
from benchmarks.send import run_send, send_goals, send_table
from benchmarks.smtp import run_smtp, smtp_goals, smtp_table
from benchmarks.tracking import run_tracking, tracking_goals, tracking_table
from benchmarks.web import run_web, web_goals, web_table

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
NAMES = ("send", "latency", "replicas", "imports", "web", "build", "tracking", "smtp")


@dataclass(frozen=True)
class Plan:
    """The sizes one run measures: the full run is what the goals are judged on."""

    sqlite_sizes: tuple[int, ...]
    postgres_sizes: tuple[int, ...]
    latency_readers: int
    # (readers, DIGEST_BATCH_SIZE) of the replica runs, on PostgreSQL
    replica_points: tuple[tuple[int, int], ...]
    import_sizes: tuple[int, ...]
    glossary_sizes: tuple[int, ...]
    # (uvicorn workers, client connections, database): "sqlite" or "postgresql"
    web_runs: tuple[tuple[int, int, str], ...]
    web_seconds: float
    web_warmup: float
    tracking_sizes: tuple[int, ...]
    # readers of the SMTP send (SQLite; PostgreSQL too at the first size when reachable)
    smtp_sizes: tuple[int, ...]


FULL = Plan(
    sqlite_sizes=(10_000, 100_000, 1_000_000),
    postgres_sizes=(100_000,),
    latency_readers=20_000,
    # 100 a batch: the provider's answers, not the senders' CPU, bound the send (200 batches of
    # 0.25 s), as against a slow provider; 1,000 a batch: the 2 cores here bind it first.
    replica_points=((20_000, 100), (20_000, 1000), (100_000, 1000)),
    import_sizes=(100_000, 1_000_000),
    glossary_sizes=(100, 1_000, 10_000),
    web_runs=((1, 8, "sqlite"), (2, 16, "postgresql")),
    web_seconds=15.0,
    web_warmup=3.0,
    tracking_sizes=(100_000,),
    smtp_sizes=(100_000,),
)
QUICK = Plan(
    sqlite_sizes=(10_000,),
    postgres_sizes=(10_000,),
    latency_readers=4_000,
    # 200 a batch: the same 20 batches as the full run's first point, so replicas can gain.
    replica_points=((4_000, 200),),
    import_sizes=(10_000,),
    glossary_sizes=(100, 1_000),
    web_runs=((1, 8, "sqlite"),),
    web_seconds=4.0,
    web_warmup=1.0,
    tracking_sizes=(10_000,),
    smtp_sizes=(2_000,),
)


@dataclass
class Section:
    """One benchmark's results as run: its table and its goals."""

    name: str
    title: str
    results: list[Any]
    table: str
    goals: list[Goal]
    extra: str = ""  # profiles and the like, printed after the table


@dataclass
class Context:
    plan: Plan
    workdir: Path
    seed: int
    postgres_url: str | None  # None: PostgreSQL skipped (unreachable or --no-postgres)
    notes: list[str] = field(default_factory=list)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        memory = "RAM unknown"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; load average at start {load}"
        + (f"; commit {commit}" if commit else "")
    )


# --------------------------------------------------------------------------- the sections


def _send(ctx: Context) -> Section:
    server = FakeSendGrid(ctx.workdir)
    results = []
    try:
        for count in ctx.plan.sqlite_sizes:
            _say(f"send: {count:,} readers on SQLite, digest and the floor …")
            results.append(run_send(ctx.workdir, server, count, seed=ctx.seed))
        if ctx.postgres_url:
            for count in ctx.plan.postgres_sizes:
                _say(f"send: {count:,} readers on PostgreSQL, digest and the floor …")
                results.append(
                    run_send(
                        ctx.workdir,
                        server,
                        count,
                        backend="postgresql",
                        postgres_url=ctx.postgres_url,
                        seed=ctx.seed,
                    )
                )
    finally:
        server.stop()
    return Section(
        "send",
        "Send: `digest send` through the sendgrid client vs the floor (same rows, same server)",
        results,
        send_table(results),
        send_goals(results),
    )


def _latency(ctx: Context) -> Section:
    _say(f"latency: {ctx.plan.latency_readers:,} readers through a provider taking 0.25 s …")
    results = run_latency(ctx.workdir, readers=ctx.plan.latency_readers)
    return Section(
        "latency",
        "Latency: `digest send` through a fake SendGrid that takes 0.25 s a request",
        results,
        latency_table(results),
        latency_goals(results),
    )


def _replicas(ctx: Context) -> Section:
    title = "Replicas: 1, 2 and 3 `digest send` started together on PostgreSQL, 0.25 s provider"
    if not ctx.postgres_url:
        _say("replicas: skipped, PostgreSQL unreachable (or --no-postgres)")
        return Section("replicas", title, [], "(skipped: PostgreSQL unreachable)", [])
    results = []
    for readers, batch_size in ctx.plan.replica_points:
        _say(
            f"replicas: {readers:,} readers in batches of {batch_size:,}, 1, 2 and 3 senders "
            "through a provider taking 0.25 s …"
        )
        results += run_replicas(
            ctx.workdir, ctx.postgres_url, readers=readers, batch_size=batch_size
        )
    return Section("replicas", title, results, replicas_table(results), replicas_goals(results))


def _imports(ctx: Context) -> Section:
    _say(
        f"imports: CSV import and export of {', '.join(f'{n:,}' for n in ctx.plan.import_sizes)} rows …"
    )
    results = run_imports(
        ctx.workdir,
        ctx.plan.import_sizes,
        backends=("sqlite", "postgresql") if ctx.postgres_url else ("sqlite",),
        postgres_url=ctx.postgres_url,
        seed=ctx.seed,
    )
    return Section(
        "imports",
        "CSV: `digest subscribers import` / `export` vs the floor (csv + email-validator + one upsert)",
        results,
        imports_table(results),
        imports_goals(results),
    )


def _web(ctx: Context) -> Section:
    results = []
    for workers, connections, database in ctx.plan.web_runs:
        if database == "postgresql" and not ctx.postgres_url:
            continue
        _say(
            f"web: POST /subscribe, {workers} uvicorn worker(s) on {database}, {connections} "
            f"connections, {ctx.plan.web_seconds:.0f} s …"
        )
        results.append(
            run_web(
                ctx.workdir,
                connections=connections,
                warmup=ctx.plan.web_warmup,
                duration=ctx.plan.web_seconds,
                workers=workers,
                backend=database,
                postgres_url=ctx.postgres_url if database == "postgresql" else None,
            )
        )
    return Section(
        "web",
        "Web: POST /subscribe on 127.0.0.1, unique addresses, confirmation mails to the outbox",
        results,
        web_table(results),
        web_goals(results),
    )


def _build(ctx: Context) -> Section:
    results = []
    for terms in ctx.plan.glossary_sizes:
        _say(f"build: {terms:,} terms, cold and warm …")
        results.append(run_build(ctx.workdir, terms, seed=ctx.seed))
    largest = results[-1]
    extra = (
        f"Where the cold load goes ({largest.terms:,} terms, cProfile, by own time):\n"
        f"{largest.load_profile}\n\n"
        f"Where a warm week's build goes ({largest.terms:,} terms, cProfile, by own time):\n"
        f"{largest.build_profile}"
    )
    return Section(
        "build",
        "Build: glossary loads in a fresh process (no cache, then cached); a week's build_site",
        results,
        build_table(results),
        build_goals(results),
        extra,
    )


def _tracking(ctx: Context) -> Section:
    server = FakeSendGrid(ctx.workdir)
    results = []
    try:
        for count in ctx.plan.tracking_sizes:
            _say(f"tracking: {count:,} readers on SQLite, clicks off then on …")
            results.append(run_tracking(ctx.workdir, server, count, seed=ctx.seed))
    finally:
        server.stop()
    return Section(
        "tracking",
        "Tracking: `digest send` with DIGEST_TRACK_CLICKS off vs on (same issue and rows)",
        results,
        tracking_table(results),
        tracking_goals(results),
    )


def _smtp(ctx: Context) -> Section:
    results = []
    for count in ctx.plan.smtp_sizes:
        _say(f"smtp: {count:,} readers on SQLite through a local SMTP server, digest and floor …")
        results.append(run_smtp(ctx.workdir, count, seed=ctx.seed))
    if ctx.postgres_url and ctx.plan.smtp_sizes:
        count = ctx.plan.smtp_sizes[0]
        _say(f"smtp: {count:,} readers on PostgreSQL through a local SMTP server …")
        results.append(
            run_smtp(
                ctx.workdir, count, backend="postgresql", postgres_url=ctx.postgres_url,
                seed=ctx.seed,
            )
        )  # fmt: skip
    return Section(
        "smtp",
        "SMTP: `digest send` with DIGEST_TRANSPORT=smtp vs smtplib over one connection",
        results,
        smtp_table(results),
        smtp_goals(results),
    )


SECTIONS: dict[str, Callable[[Context], Section]] = {
    "send": _send,
    "latency": _latency,
    "replicas": _replicas,
    "imports": _imports,
    "web": _web,
    "build": _build,
    "tracking": _tracking,
    "smtp": _smtp,
}


# --------------------------------------------------------------------------- running


def _run(args: argparse.Namespace) -> tuple[list[Section], list[str]]:
    plan = QUICK if args.quick else FULL
    chosen = [name for name in NAMES if name in set(args.only or NAMES)]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="digest-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    postgres_url: str | None = None
    notes: list[str] = []
    if not args.no_postgres:
        why = postgres_reachable(args.postgres_url)
        if why is None:
            postgres_url = args.postgres_url
        else:
            notes.append(f"PostgreSQL skipped: {args.postgres_url} unreachable ({why})")
    ctx = Context(plan, workdir, args.seed, postgres_url, notes)
    _say(f"digest benchmarks ({'quick' if args.quick else 'full'} run), seed {args.seed}")
    _say(f"machine: {_machine()}")
    _say(f"scratch folder: {workdir}")
    start_load = os.getloadavg()[0]
    sections: list[Section] = []
    try:
        for name in chosen:
            sections.append(SECTIONS[name](ctx))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if start_load > (os.cpu_count() or 1) * 0.5:
        notes.append(
            f"the machine was busy before the run (load average {start_load:.2f} on "
            f"{os.cpu_count()} cores): if other processes kept competing for the CPU, wall times "
            "are inflated; the ratios, measured side by side, are steadier"
        )
    return sections, notes


def _print(sections: Sequence[Section], notes: Sequence[str], seconds: float) -> None:
    for section in sections:
        _say(f"\n{section.title}")
        _say(section.table)
        if section.extra:
            _say(f"\n{section.extra}")
    _say("\nGoals")
    for section in sections:
        for goal in section.goals:
            _say(f"  [{'met' if goal.met else 'MISSED'}] {goal.name}: {goal.measured}")
    for note in notes:
        _say(f"  note: {note}")
    _say(f"\nfinished in {seconds:.0f} s")


def _plain(value: Any) -> Any:
    """Results as JSON: dataclasses field by field, with their derived figures (`ratio`…)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("ratio", "rate", "seconds"):
            if name not in out and isinstance(getattr(type(value), name, None), property):
                out[name] = getattr(value, name)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _json(sections: Sequence[Section], notes: Sequence[str]) -> dict[str, Any]:
    return {
        **{s.name: _plain(s.results) for s in sections},
        "goals": [dataclasses.asdict(g) for s in sections for g in s.goals],
        "notes": list(notes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", action="append", choices=NAMES, help="run only these")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="synthetic data seed")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("DIGEST_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server (a scratch schema per run, dropped after)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--workdir", help="scratch folder [default: a new temp folder]")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a speed goal is missed, too"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sections, notes = _run(args)
    _print(sections, notes, time.perf_counter() - started)
    if args.json:
        args.json.write_text(json.dumps(_json(sections, notes), indent=2) + "\n")
    goals = [g for s in sections for g in s.goals]
    # A wrong result always fails; a missed speed goal only with --strict (machines vary).
    if any(not g.met and g.correctness for g in goals):
        return 2
    if args.strict and any(not g.met for g in goals):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
