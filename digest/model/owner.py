"""Who holds an issue's send lease, as stored beside it: the process and the claim, as data.

Only the facts live here, so an issue record can carry them; finding this process's own facts
and judging whether another's still runs (reading /proc) is `digest.owner`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Machine", "Owner"]


@dataclass(frozen=True, slots=True)
class Machine:
    """Where a process runs, as far as pids can be compared: host, boot and pid namespace."""

    host: str
    boot_id: str | None  # /proc/sys/kernel/random/boot_id: a new random value on every boot
    pid_ns: str | None  # /proc/self/ns/pid, e.g. "pid:[4026531836]": pids mean nothing outside it


@dataclass(frozen=True, slots=True)
class Owner:
    """One send's holder: the process (`machine`, `pid`, `started`) and this claim (`run`).

    `run` is random per claim, so two sends in one process (the scheduler and a manual resume)
    are two owners; `started` is field 22 of /proc/PID/stat, clock ticks after boot, so a pid
    the kernel has since handed to another process is not taken for the owner.
    """

    machine: Machine
    pid: int
    started: int | None
    run: str

    @property
    def host(self) -> str:
        return self.machine.host

    @property
    def token(self) -> str:
        """What `issues.claimed_by` holds: unique per claim, at most 64 characters."""
        return f"{self.host[:40]}:{self.pid}:{self.run}"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.machine.host,
            "boot_id": self.machine.boot_id,
            "pid_ns": self.machine.pid_ns,
            "pid": self.pid,
            "started": self.started,
            "run": self.run,
        }

    @classmethod
    def from_json(cls, data: object) -> Owner | None:
        """The owner a row recorded, or None when there is none or it cannot be read."""
        if not isinstance(data, Mapping):
            return None
        host, pid, run = data.get("host"), data.get("pid"), data.get("run")
        boot_id, pid_ns, started = data.get("boot_id"), data.get("pid_ns"), data.get("started")
        if not (isinstance(host, str) and isinstance(run, str)):
            return None
        if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 0):
            return None
        if not (started is None or (isinstance(started, int) and not isinstance(started, bool))):
            return None
        if not all(v is None or isinstance(v, str) for v in (boot_id, pid_ns)):
            return None
        return cls(Machine(host, boot_id, pid_ns), pid, started, run)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"
