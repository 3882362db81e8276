"""Who holds an issue's send lease, recorded so that another process can tell whether it still runs.

A lease alone cannot tell a slow sender from a dead one, so a sender killed with SIGKILL (or by
a power cut) used to hold its issue until the lease lapsed. With the owner's host name, boot id,
pid namespace, pid and process start time stored beside the lease, a claimant on the same host
can prove the owner gone — the machine has booted since, or no process has that pid and start
time — and take over at once (`digest.store.issues.claim_send`).

The rule is: take over only on proof. Another host's owner cannot be checked from here (the
lease is the only truth there), and so neither can one whose facts are missing (an older digest,
a platform without /proc), one in another pid namespace (a container sharing the host name) or
one whose process is hidden from us (/proc mounted with hidepid): all of those are waited out.

`judge` is pure; `this_machine`, `current_owner` and `probe_process` read /proc (Linux) and are
the only places that touch the system.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from digest.model.owner import Machine, Owner

__all__ = [
    "PROC",
    "Liveness",
    "Probe",
    "ProcessInfo",
    "current_owner",
    "judge",
    "owner_liveness",
    "parse_stat",
    "probe_process",
    "this_machine",
]

PROC = Path("/proc")

# Host names that many machines share: they identify no machine, so an owner there is never
# judged from here (two machines called "localhost" sharing one PostgreSQL must not take over
# each other's sends).
_ANONYMOUS_HOSTS = frozenset({"", "localhost", "localhost.localdomain", "localhost6"})


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What /proc/PID/stat says about a live pid: when it started, and whether it is a zombie."""

    started: int
    zombie: bool  # killed (or exited) but not yet reaped by its parent: it runs no more code


# A pid as seen from here: running (with its facts), no such process, or hidden from us.
Probe = ProcessInfo | Literal["absent", "hidden"]


@dataclass(frozen=True, slots=True)
class Liveness:
    """Whether a lease's owner still runs, and why we think so.

    "gone" is proof (take the lease over now); "running", "elsewhere" (another host) and
    "unknown" mean wait for the lease to lapse.
    """

    state: Literal["running", "gone", "elsewhere", "unknown"]
    reason: str

    @property
    def gone(self) -> bool:
        return self.state == "gone"


def parse_stat(text: str) -> ProcessInfo | None:
    """Start time and state from the text of /proc/PID/stat; None when it is not one.

    Field 2, the command name, is in parentheses and may itself hold spaces and ")", so the
    fields are counted from after the *last* ")": state is field 3, start time field 22.
    """
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 20:
        return None
    state, started = fields[0], fields[19]
    if not started.isdigit():
        return None
    return ProcessInfo(started=int(started), zombie=state in ("Z", "X", "x"))


def judge(owner: Owner | None, here: Machine, probe: Callable[[int], Probe]) -> Liveness:
    """Is the lease's `owner` provably gone, seen from a process on `here`? Pure: `probe` looks."""
    if owner is None:
        return Liveness(
            "unknown", "its holder did not record which process it is, as older digests did not"
        )
    theirs = owner.machine
    if theirs.host in _ANONYMOUS_HOSTS or here.host in _ANONYMOUS_HOSTS:
        return Liveness("unknown", f"host name {theirs.host!r} does not identify one machine")
    if theirs.host != here.host:
        return Liveness("elsewhere", f"it runs on another host ({theirs.host})")
    if theirs.boot_id is None or here.boot_id is None:
        return Liveness("unknown", "this system does not say which boot a process belongs to")
    if theirs.boot_id != here.boot_id:
        return Liveness("gone", f"host {theirs.host} has booted again since it started")
    if theirs.pid_ns is None or theirs.pid_ns != here.pid_ns:
        return Liveness("unknown", "it runs in another pid namespace, such as another container")
    if owner.started is None:
        return Liveness("unknown", "it did not record when its process started")
    seen = probe(owner.pid)
    if seen == "absent":
        return Liveness("gone", f"no process with pid {owner.pid} is running")
    if seen == "hidden":
        return Liveness("unknown", f"pid {owner.pid} exists but is hidden from this user")
    if seen.started != owner.started:
        return Liveness("gone", f"pid {owner.pid} is now another process, started later")
    if seen.zombie:
        return Liveness("gone", f"pid {owner.pid} has exited and is a zombie not yet reaped")
    return Liveness("running", f"pid {owner.pid} is still running")


# --------------------------------------------------------------------------- the system's side


def this_machine(proc: Path | None = None) -> Machine:
    """This process's host, boot and pid namespace; None for what the system does not tell."""
    proc = proc or PROC
    return Machine(
        host=socket.gethostname(),
        boot_id=_read(lambda: (proc / "sys/kernel/random/boot_id").read_text().strip()),
        pid_ns=_read(lambda: os.readlink(proc / "self/ns/pid")),
    )


def current_owner(proc: Path | None = None) -> Owner:
    """An owner for a new claim by this process."""
    proc = proc or PROC
    pid = os.getpid()
    seen = probe_process(pid, proc)
    started = seen.started if isinstance(seen, ProcessInfo) else None
    return Owner(this_machine(proc), pid, started, uuid.uuid4().hex[:12])


def probe_process(pid: int, proc: Path | None = None) -> Probe:
    """Look `pid` up in /proc. Missing from /proc is "absent" only if the kernel agrees: with
    /proc mounted hidepid, other users' processes are missing but alive ("hidden")."""
    proc = proc or PROC
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return _absent_or_hidden(pid)
    except OSError:
        return "hidden"
    info = parse_stat(text)
    return info if info is not None else "hidden"


def owner_liveness(owner: Owner | None) -> Liveness:
    """`judge` with this process's machine and /proc: what `claim_send` asks about a holder."""
    return judge(owner, this_machine(), probe_process)


def _absent_or_hidden(pid: int) -> Probe:
    try:
        os.kill(pid, 0)  # signal 0: checks the pid exists, delivers nothing
    except ProcessLookupError:
        return "absent"
    except (OSError, OverflowError):  # PermissionError: it exists, owned by someone else
        return "hidden"
    return "hidden"  # alive, yet not in this /proc: not the /proc it runs under


def _read(read: Callable[[], str]) -> str | None:
    try:
        return read() or None
    except OSError:
        return None
