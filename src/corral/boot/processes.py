"""The processes `corral up` started, recorded so that later commands (`corral logs`,
`restart`, `down`, `clean`, `status`) can find them from another terminal.

Each started command gets ``<run_dir>/<name>.json``: its pid (also its process group:
commands run in a session of their own), the argv, the log file, the `corral up` that
holds it (``owner``, None when detached) and the kernel's start time of the pid, so a
recycled pid is never taken for the service. Environment values are not recorded: a
start command's env may hold secrets; a restart reads them from the config again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    name: str
    pid: int
    argv: list[str]
    log_path: str
    cwd: str | None = None
    owner: int | None = None  # the `corral up` holding it; None: detached
    started_at: float = 0.0  # wall clock, for people
    start_ticks: int | None = None  # the kernel's start time of `pid` (Linux), against pid reuse


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (None where there is no /proc)."""
    stat = _stat(pid)
    return int(stat[19]) if stat else None


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return text[text.rindex(")") + 2:].split()


def pid_alive(pid: int, ticks: int | None = None) -> bool:
    """True while ``pid`` runs (a zombie does not) and is the process started at ``ticks``."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # our own child (`corral up` in this process): reap it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    stat = _stat(pid)
    if stat is None:
        return True
    if stat[0] in ("Z", "X"):
        return False
    return ticks is None or int(stat[19]) == ticks


class ProcessTable:
    """The records in one run dir (`corral up` uses ``<data dir>/run``)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def write(self, record: ProcessRecord) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        partial = self.path(record.name).with_suffix(".json.partial")
        partial.write_text(json.dumps(asdict(record)) + "\n")
        partial.replace(self.path(record.name))

    def get(self, name: str) -> ProcessRecord | None:
        try:
            data: dict[str, Any] = json.loads(self.path(name).read_text())
            return ProcessRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def all(self) -> list[ProcessRecord]:
        """Every record, oldest start first."""
        if not self.run_dir.is_dir():
            return []
        records = [self.get(p.stem) for p in sorted(self.run_dir.glob("*.json"))]
        return sorted((r for r in records if r is not None), key=lambda r: r.started_at)

    def forget(self, name: str, pid: int | None = None) -> None:
        """Drop the record of ``name`` (only if it is still the one of ``pid``, when given)."""
        record = self.get(name)
        if record is not None and (pid is None or record.pid == pid):
            self.path(name).unlink(missing_ok=True)
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)

    def alive(self, record: ProcessRecord) -> bool:
        return pid_alive(record.pid, record.start_ticks)


def stop_process(record: ProcessRecord, grace: float = 10.0) -> str:
    """SIGTERM the record's process group, SIGKILL after ``grace`` seconds; says what happened."""
    if not pid_alive(record.pid, record.start_ticks):
        return "not running"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, signal.SIGTERM)
    if _wait_gone(record, grace):
        return f"stopped (pid {record.pid})"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(record.pid, signal.SIGKILL)
    _wait_gone(record, 5.0)
    return f"killed after {grace:g}s (pid {record.pid} ignored SIGTERM)"


def signal_owner(record: ProcessRecord, grace: float) -> bool:
    """Ask the `corral up` holding the record to stop (it stops its services in order);
    True once it has exited."""
    if record.owner is None or not pid_alive(record.owner):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.owner, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(record.owner):
            return True
        time.sleep(0.05)
    return False


def _wait_gone(record: ProcessRecord, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(record.pid, record.start_ticks):
            return True
        time.sleep(0.05)
    return not pid_alive(record.pid, record.start_ticks)
