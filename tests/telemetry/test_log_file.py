"""``log_file``: lines go to a file, redacted, shared by several processes, rotated by
logrotate-style renames or by size (each case in real processes of their own, since
configuring logging is process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from corral.telemetry.logging import logging_config

PROGRAM = """
import logging, os, sys, time
from corral.telemetry.logging import configure_logging
configure_logging("info", "json", log_file=sys.argv[1], max_bytes=int(sys.argv[2]), backup_count=2)
log = logging.getLogger("corral.test")
for i in range(int(sys.argv[3])):
    log.info("line %d of %s api_key=sk-secret0123456789", i, os.getpid())
    if sys.argv[4:] and i == int(sys.argv[3]) // 2:
        os.rename(sys.argv[1], sys.argv[4])  # what logrotate does; the handler reopens
"""


def _run(*args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PROGRAM, *map(str, args)], stderr=subprocess.PIPE)


def _lines(*paths: Path) -> list[dict[str, object]]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def test_processes_share_one_file_and_no_line_is_lost_or_leaks_a_secret(tmp_path: Path) -> None:
    log = tmp_path / "corral.log"
    workers = [_run(log, 0, 500) for _ in range(3)]
    for worker in workers:
        _, err = worker.communicate(timeout=20)
        assert worker.returncode == 0, err.decode()
        assert err == b""  # nothing went to stderr
    lines = _lines(log)
    assert len(lines) == 1500
    assert {line["logger"] for line in lines} == {"corral.test"}
    assert all("sk-secret" not in str(line["message"]) and "[redacted]" in str(line["message"]) for line in lines)


def test_a_renamed_file_is_reopened(tmp_path: Path) -> None:
    log, rotated = tmp_path / "corral.log", tmp_path / "corral.log.1"
    _, err = _run(log, 0, 100, rotated).communicate(timeout=20)
    assert err == b""
    assert len(_lines(rotated)) == 51 and len(_lines(log)) == 49


def test_max_bytes_rotates_keeping_backup_count_files(tmp_path: Path) -> None:
    log = tmp_path / "corral.log"
    _, err = _run(log, 2000, 200).communicate(timeout=20)
    assert err == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corral.log", "corral.log.1", "corral.log.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    assert _lines(log)[-1]["message"].startswith("line 199 ")  # type: ignore[union-attr]


def test_a_file_in_a_missing_directory_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"directory {tmp_path / 'nope'} does not exist"):
        logging_config(log_file=tmp_path / "nope" / "corral.log")
    with pytest.raises(ValueError, match="is a directory"):
        logging_config(log_file=tmp_path)
    assert logging_config()["handlers"]["default"]["stream"] == "ext://sys.stderr"
