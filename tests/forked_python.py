"""`python -m MODULE ARGS` and `python -c CODE ARGS` in child processes that start in
milliseconds, for the tests that start dozens of them (the kill -9 loops, `digest run`, pytest
sessions): a fresh interpreter spends ~1.3 s of CPU importing digest, SQLAlchemy, Alembic,
pydantic and the rest before it does anything.

Each child is forked from multiprocessing's fork server, which imported all of that once. It is
still a process of its own (its own pid and start time, killed by SIGKILL or stopped by SIGTERM
like any other, its lease judged by them), and what it runs is what the command line runs: the
module executed as `__main__` (as -m does) or the code, with exactly the environment (PYTHONPATH
included), working folder and arguments given, stdout and stderr in files; it ends as an
interpreter does (threads joined, atexit handlers run). Only the interpreter's start-up and the
imports are shared, made with the test process's environment: nothing digest does at import
time reads it. What needs an interpreter of its own (another PYTHONHASHSEED, resource limits,
a process's memory measured) keeps subprocess.

`ForkedPython` answers as much of `subprocess.Popen` as the tests use; `run_forked`, of
`subprocess.run`.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import multiprocessing
import multiprocessing.context
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ForkedPython", "run_forked"]

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def _fork_server() -> multiprocessing.context.ForkServerContext:
    """The context whose server forks the children; it starts with the first of them, and
    imports what they will need first (tests/forked_python_warmup.py)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.forked_python_warmup"])
    return context


def _run(argv: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    """In the child: become `python *argv` and run to its exit."""
    for target, path in ((1, out), (2, err)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # An interpreter puts PYTHONPATH ahead of the standard library; this one started with the
    # test process's sys.path, so the entries it lacks go first.
    for entry in reversed(env.get("PYTHONPATH", "").split(os.pathsep)):
        if entry and os.path.abspath(entry) not in {os.path.abspath(p) for p in sys.path}:
            sys.path.insert(0, entry)
    option, target, *args = argv
    try:
        if option == "-m":
            sys.argv = ["-m", *args]
            spec = importlib.util.find_spec(target)
            if spec is not None and spec.submodule_search_locations is None:
                # A module run as __main__ is a copy apart from the imported one, as under -m
                # (runpy warns about a module it is asked to run that is imported already).
                sys.modules.pop(target, None)
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        elif option == "-c":
            sys.argv = ["-c", *args]
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
        else:
            raise ValueError(f"ForkedPython runs -m MODULE or -c CODE, not {option}")
    finally:
        # As an interpreter's exit does (multiprocessing's child ends with os._exit): wait for
        # the threads, then run the atexit handlers; the streams are flushed after.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()


def _temporary_file() -> Path:
    fd, name = tempfile.mkstemp(prefix="forked-python-", suffix=".out")
    os.close(fd)
    return Path(name)


class ForkedPython:
    """A running `python *argv`, argv being `-m MODULE ARGS` or `-c CODE ARGS`. Its stdout goes
    to `output`, else to a temporary file `communicate` reads; its stderr goes with it, or with
    `separate_stderr` to a file of its own. See the module's docstring."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path = REPO,
        output: Path | None = None,
        separate_stderr: bool = False,
    ) -> None:
        self.args = ["python", *argv]
        self._temporary: list[Path] = []
        if output is None:
            output = _temporary_file()
            self._temporary.append(output)
        else:  # made (emptied) here, as a file opened for a Popen's stdout would be
            output.write_bytes(b"")
        self._errors: Path | None = None
        if separate_stderr:
            self._errors = _temporary_file()
            self._temporary.append(self._errors)
        self._output = output
        self._read: tuple[bytes, bytes | None] | None = None
        streams = (str(output), str(self._errors or output))
        self._process = _fork_server().Process(
            target=_run, args=(list(argv), dict(env), str(cwd), *streams), daemon=True
        )
        self._process.start()
        self.pid: int = self._process.pid  # type: ignore[assignment]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self._process.kill()

    def communicate(self, timeout: float | None = None) -> tuple[bytes, bytes | None]:
        """Wait for the end; stdout (with stderr in it, unless `separate_stderr`) and stderr
        (None when it went with stdout), as Popen does for the same pipes."""
        self.wait(timeout)
        if self._read is None:
            errors = self._errors.read_bytes() if self._errors else None
            self._read = (self._output.read_bytes(), errors)
            for path in self._temporary:
                path.unlink()
        return self._read


def run_forked(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path = REPO, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run([python, *argv], capture_output=True, text=True, timeout=timeout)`, forked
    warm: stdout and stderr apart, killed (and TimeoutExpired raised) after `timeout`."""
    proc = ForkedPython(argv, env=env, cwd=cwd, separate_stderr=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, out.decode(), (err or b"").decode()
    )
