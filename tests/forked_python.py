"""`python -m MODULE ARGS` and `python -c CODE ARGS` in child processes that start in
milliseconds, for the tests that start dozens of them (the kill -9 loops, `digest run`): a fresh
interpreter spends ~1.3 s of CPU importing digest, SQLAlchemy, Alembic, pydantic and the rest
before it does anything.

Each child is forked from multiprocessing's fork server, which imported all of that once. It is
still a process of its own (its own pid and start time, killed by SIGKILL or stopped by SIGTERM
like any other, its lease judged by them), and what it runs is what the command line runs: the
module executed as `__main__` (as -m does) or the code, with exactly the environment, working
folder and arguments given, its output (stdout and stderr together) in a file; it ends as an
interpreter does (threads joined, atexit handlers run). Only the interpreter's start-up and the
imports are shared, made with the test process's environment: nothing digest does at import
time reads it.

`ForkedPython` answers as much of `subprocess.Popen` as the tests use.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import multiprocessing
import multiprocessing.context
import os
import runpy
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ForkedPython"]

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def _fork_server() -> multiprocessing.context.ForkServerContext:
    """The context whose server forks the children; it starts with the first of them, and
    imports what they will need first (tests/forked_python_warmup.py)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.forked_python_warmup"])
    return context


def _run(argv: list[str], env: dict[str, str], cwd: str, output: str) -> None:
    """In the child: become `python *argv` and run to its exit."""
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
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


class ForkedPython:
    """A running `python *argv`, argv being `-m MODULE ARGS` or `-c CODE ARGS`; its output goes
    to `output`, else to a temporary file `communicate` reads. See the module's docstring."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path = REPO,
        output: Path | None = None,
    ) -> None:
        self.args = ["python", *argv]
        if output is None:
            fd, name = tempfile.mkstemp(prefix="forked-python-", suffix=".out")
            os.close(fd)
            self._output, self._temporary = Path(name), True
        else:  # made (emptied) here, as a file opened for a Popen's stdout would be
            output.write_bytes(b"")
            self._output, self._temporary = output, False
        self._out: bytes | None = None
        self._process = _fork_server().Process(
            target=_run, args=(list(argv), dict(env), str(cwd), str(self._output)), daemon=True
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

    def kill(self) -> None:
        self._process.kill()

    def communicate(self, timeout: float | None = None) -> tuple[bytes, None]:
        """Wait for the end; the output (stdout and stderr together), and None, as Popen does
        for a stdout piped with stderr sent to it."""
        self.wait(timeout)
        if self._out is None:
            self._out = self._output.read_bytes()
            if self._temporary:
                self._output.unlink()
        return self._out, None
