"""The test suite's own setup: which PostgreSQL and browser it finds, what it says it covered,
and that its SendGrid stand-in stops at once (the suite starts and stops hundreds of them).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import (
    DEFAULT_POSTGRES_URL,
    ENV_VAR,
    REPO,
    PostgresTarget,
    chromium_problem,
    find_postgres,
    postgres,
)
from tests.forked_python import run_forked
from tests.sendgrid_server import SendGridTestServer

NOBODY = "postgresql://postgres@127.0.0.1:1/test"  # port 1: refused at once
DB_TEST = "tests/test_issues.py::test_moving_a_missing_issue_says_there_is_none"
BROWSER_TEST = "tests/test_email_browser.py::test_tricky_content_renders_as_text_in_the_browser"


# --------------------------------------------------------------------------- which PostgreSQL


def test_without_the_variable_postgresql_is_looked_for_at_the_local_default():
    assert DEFAULT_POSTGRES_URL == "postgresql://postgres@127.0.0.1:5432/test"
    target = find_postgres(None, default=NOBODY)
    assert (target.url, target.origin) == (NOBODY, "the local default")
    assert target.problem and "Connection refused" in target.problem


def test_the_variable_wins_over_the_local_default():
    target = find_postgres(NOBODY, default=DEFAULT_POSTGRES_URL)
    assert (target.url, target.origin) == (NOBODY, ENV_VAR)
    assert target.problem


def test_an_unreachable_postgresql_is_named_with_what_to_do_and_no_password():
    target = PostgresTarget("postgresql://digest:hunter2@db:5432/test", ENV_VAR, "refused")
    message = target.not_tested()
    assert "hunter2" not in message
    assert "postgresql://digest:***@db:5432/test (DIGEST_TEST_POSTGRES_URL)" in message
    assert message.endswith("is unreachable: refused. Start PostgreSQL there or correct it")
    default = PostgresTarget(DEFAULT_POSTGRES_URL, "the local default", "refused").not_tested()
    assert default.endswith(f"Start PostgreSQL there or set {ENV_VAR} to one that runs")


def test_a_missing_chromium_says_how_to_install_it(tmp_path: Path):
    problem = chromium_problem(str(tmp_path / "chromium"))
    assert problem == (
        f"{tmp_path / 'chromium'} is missing; install Debian's chromium"
        " (`apt-get install chromium`, which `bash tests/run` does as root)"
    )


# --------------------------------------------------------------------------- a whole session


def _session(tmp_path: Path, *targets: str, chromium: str | None = None, **env: str):
    """Run pytest on `targets` in a child process, with `env` and no inherited CI settings."""
    child_env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CI", ENV_VAR} and not k.startswith(("PYTEST_", "HYPOTHESIS"))
    }
    child_env.update(env)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *targets]
    if chromium is not None:
        # A plugin loaded before the conftest points the browser tests at another Chromium.
        (tmp_path / "other_chromium.py").write_text(
            f"import tests.browser\ntests.browser.CHROMIUM = {chromium!r}\n", encoding="utf-8"
        )
        child_env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(tmp_path)])
        args += ["-p", "other_chromium"]
    # Forked warm (tests/forked_python.py): a session's start-up imports are most of its time.
    return run_forked(args, cwd=REPO, env=child_env, timeout=300)


def test_without_postgresql_or_chromium_a_session_skips_them_and_says_so_last(tmp_path: Path):
    missing = str(tmp_path / "no-chromium")
    run = _session(tmp_path, DB_TEST, BROWSER_TEST, chromium=missing, **{ENV_VAR: NOBODY})
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    assert "1 passed, 2 skipped" in lines[-1], run.stdout
    assert lines[-2] == (
        "digest: backends sqlite (1 ran) only, PostgreSQL NOT tested (0 ran, 1 skipped:"
        f" {NOBODY} from {ENV_VAR} is unreachable); browser NOT tested (0 ran, 1 skipped):"
        f" {chromium_problem(missing)}"
    )
    assert f"PostgreSQL not tested: {NOBODY} ({ENV_VAR}) is unreachable" in run.stdout
    assert f"browser not tested: {missing} is missing" in run.stdout


def test_under_ci_a_missing_chromium_fails_the_browser_tests(tmp_path: Path):
    if postgres().problem:
        pytest.skip(f"needs a reachable PostgreSQL to get past the session start: {postgres()}")
    missing = str(tmp_path / "no-chromium")
    run = _session(tmp_path, DB_TEST, BROWSER_TEST, chromium=missing, CI="true")
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"CI=true needs the browser tests. {missing} is missing" in run.stdout
    # Without the variable the local default is found: both backends ran.
    assert (
        "digest: backends sqlite (1 ran) + postgresql (1 ran; "
        f"{DEFAULT_POSTGRES_URL} from the local default); browser NOT tested (0 ran, 1 failed)"
    ) in run.stdout
    last = run.stdout.strip().splitlines()[-1]
    assert "2 passed" in last and "1 error" in last, run.stdout


def test_under_ci_an_unreachable_postgresql_stops_the_session_at_its_start(tmp_path: Path):
    run = _session(tmp_path, DB_TEST, CI="true", **{ENV_VAR: NOBODY})
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, run.stdout + run.stderr
    assert f"CI=true needs both backends. PostgreSQL not tested: {NOBODY}" in run.stderr


# --------------------------------------------------------------------------- the fake SendGrid


def test_the_test_sendgrid_server_stops_at_once():
    # serve_forever() notices shutdown() only between polls; at the default 0.5 s poll every
    # stop cost up to half a second. The fastest of three stops shows the poll, not the load.
    stops = []
    for _ in range(3):
        server = SendGridTestServer().start()
        started = time.monotonic()
        server.stop()
        stops.append(time.monotonic() - started)
    assert min(stops) < 0.1, stops
