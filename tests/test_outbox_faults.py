"""An outbox folder that cannot be written mid-send pauses the issue like a provider outage.

Read-only, full, or not a folder at all: the send retries as usual, then pauses with a reason
naming the folder and the OS error (`digest send` exits 2), and once the folder is fixed the
next run finishes — every reader exactly one .eml, however many of the broken batch's files
were already written.

Tests run as root, which ignores permission bits, so the faults are made another way: a regular
file where the folder (or its manifest folder) should be, and an `open` in the outbox module
that fails like a read-only or full disk after a given number of files.
"""

from __future__ import annotations

import builtins
import errno
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from digest.config import Settings, get_settings
from digest.delivery import outbox as outbox_module
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import send_issue
from digest.delivery.transport import RetryableError
from digest.store.db import utcnow
from digest.store.issues import get_issue
from tests.sending import (
    NOW,
    WEEK,
    FakeSleep,
    build_issue,
    ledger,
    mails_per_address,
    seed_subscribers,
)

READERS = 10
EMAILS = {f"reader{i}@example.org" for i in range(READERS)}


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    # One batch at a time: the faults and crashes here are scripted by the order batches go
    # out in (tests/test_in_flight.py and test_crash.py send with several at once).
    return Settings(
        batches_in_flight=1,
        batch_size=4,
        max_retries=2,
        retry_base_delay=0.01,
        retry_max_delay=0.02,
    )


def leftovers(folder: Path) -> list[Path]:
    """Temporary files a failed write left behind (there should be none)."""
    return [*folder.glob(".*.tmp"), *folder.glob(".batches/.*.tmp")]


class _FullFile:
    """A file on a disk that has just filled up: it opens, but nothing can be written."""

    def __init__(self, fh: IO[bytes], error: OSError) -> None:
        self._fh = fh
        self._error = error

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._fh.close()

    def write(self, data: bytes) -> int:
        raise self._error

    def flush(self) -> None:
        self._fh.flush()

    def fileno(self) -> int:
        return self._fh.fileno()


class BrokenDisk:
    """Stands in for `open` in the outbox module: after `room` files written, each write fails
    with `error` — at open (read-only, permission) or while writing (full) — `times` times."""

    def __init__(self, error: OSError, *, at: str, room: int, times: int | None = None) -> None:
        self.error = error
        self.at = at
        self.room = room
        self.times = times
        self.opened = 0
        self.failures = 0

    def heal(self) -> None:
        self.times = self.failures

    def __call__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" not in mode:
            return builtins.open(file, mode, *args, **kwargs)
        self.opened += 1
        failing = self.opened > self.room and (self.times is None or self.failures < self.times)
        if failing and self.at == "open":
            self.failures += 1
            raise self.error
        fh = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 - the caller closes it
        if failing:
            self.failures += 1
            return _FullFile(fh, self.error)
        return fh


FAULTS = {
    "full": (OSError(errno.ENOSPC, "No space left on device"), "write"),
    "read-only": (OSError(errno.EROFS, "Read-only file system"), "open"),
    "no-permission": (PermissionError(errno.EACCES, "Permission denied"), "open"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_an_outbox_that_breaks_mid_batch_pauses_naming_the_folder_and_resumes_each_reader_once(
    engine: Engine,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    folder = tmp_path / "outbox"
    error, at = FAULTS[fault]
    # Batch 1 (4 mails and its manifest) goes through; batch 2 breaks after two of its mails.
    disk = BrokenDisk(error, at=at, room=7)
    monkeypatch.setattr(outbox_module, "open", disk, raising=False)
    sleep = FakeSleep()

    paused = send_issue(
        engine, settings, OutboxTransport(folder, clock=utcnow), WEEK, now=NOW, sleep=sleep
    )

    assert paused.status == "paused", paused
    assert (paused.sent, paused.api_calls) == (4, 1 + 1 + settings.max_retries)
    assert len(sleep.waits) == settings.max_retries  # the usual retries, then the pause
    assert f"cannot write to the outbox folder {folder}" in (paused.reason or "")
    assert error.strerror in (paused.reason or "") and "again" in (paused.reason or "")
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "paused"
    assert issue.status_reason == paused.reason
    assert ledger(engine) == {"sent": 4, "claimed": 4}  # kept claimed: resumed under its name
    assert sum(mails_per_address(folder).values()) == 6
    assert not leftovers(folder)

    disk.heal()
    finished = send_issue(engine, settings, OutboxTransport(folder, clock=utcnow), WEEK, now=NOW)

    assert finished.status == "sent", finished
    assert mails_per_address(folder) == Counter(dict.fromkeys(EMAILS, 1))
    assert ledger(engine) == {"sent": READERS}
    assert not leftovers(folder)


def test_a_disk_that_frees_up_within_the_retries_finishes_the_send_in_the_same_run(
    engine: Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    folder = tmp_path / "outbox"
    disk = BrokenDisk(OSError(errno.ENOSPC, "No space left on device"), at="write", room=6, times=1)
    monkeypatch.setattr(outbox_module, "open", disk, raising=False)

    summary = send_issue(
        engine, settings, OutboxTransport(folder, clock=utcnow), WEEK, now=NOW, sleep=FakeSleep()
    )

    assert (summary.status, summary.sent, summary.api_calls) == ("sent", READERS, 4)
    assert mails_per_address(folder) == Counter(dict.fromkeys(EMAILS, 1))
    assert not leftovers(folder)


def test_a_manifest_folder_that_cannot_be_made_keeps_the_written_batch_claimed_until_it_can(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    seed_subscribers(engine, READERS)
    build_issue(engine)
    folder = tmp_path / "outbox"
    folder.mkdir()
    (folder / ".batches").write_text("not a folder")  # every mail is written, no manifest is

    paused = send_issue(
        engine, settings, OutboxTransport(folder, clock=utcnow), WEEK, now=NOW, sleep=FakeSleep()
    )

    assert paused.status == "paused" and str(folder) in (paused.reason or "")
    assert ledger(engine) == {"claimed": 4}
    written = mails_per_address(folder)
    assert sum(written.values()) == 4 and set(written.values()) == {1}  # rewritten, not copied

    (folder / ".batches").unlink()
    finished = send_issue(engine, settings, OutboxTransport(folder, clock=utcnow), WEEK, now=NOW)

    assert finished.status == "sent"
    assert mails_per_address(folder) == Counter(dict.fromkeys(EMAILS, 1))
    assert ledger(engine) == {"sent": READERS}


def test_an_outbox_folder_that_cannot_be_read_is_a_retryable_error_not_cannot_tell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(self: Path) -> bool:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "exists", unreadable)

    with pytest.raises(RetryableError, match=f"cannot read the outbox folder {tmp_path}"):
        OutboxTransport(tmp_path, clock=utcnow).lookup_batch("2026-W10-1-000001")


def test_digest_send_exits_2_while_the_outbox_is_not_a_folder_and_finishes_once_it_is(
    engine: Engine, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from digest.cli import app

    seed_subscribers(engine, READERS)
    build_issue(engine)
    for key, value in {
        "DIGEST_BATCH_SIZE": "4",
        "DIGEST_MAX_RETRIES": "1",
        "DIGEST_RETRY_BASE_DELAY": "0",
        "DIGEST_RETRY_MAX_DELAY": "0",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    folder = Path(settings_env["DIGEST_OUTBOX_DIR"])
    folder.write_text("someone put a file where the outbox folder goes")
    runner = CliRunner()

    paused = runner.invoke(app, ["send", "--week", str(WEEK)])
    # Resuming the claimed batch while the folder is still broken pauses again, not crashes.
    still = runner.invoke(app, ["send", "--week", str(WEEK)])

    assert paused.exit_code == 2, paused.output
    assert f"cannot write to the outbox folder {folder}" in paused.output
    assert "FileExistsError" in paused.output and "digest send" in paused.output
    assert still.exit_code == 2, still.output
    assert f"the outbox folder {folder}" in still.output
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "paused"
    assert str(folder) in (issue.status_reason or "")

    folder.unlink()
    finished = runner.invoke(app, ["send", "--week", str(WEEK)])

    assert finished.exit_code == 0, finished.output
    assert mails_per_address(folder) == Counter(dict.fromkeys(EMAILS, 1))
    assert ledger(engine) == {"sent": READERS}
