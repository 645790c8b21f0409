"""`python -m corral.deploy.healthcheck` (the image's HEALTHCHECK) against a real
`corral serve`: it finds the port in the mounted config, as the container does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _probe(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    return subprocess.run([sys.executable, "-m", "corral.deploy.healthcheck"], env=clean | env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_probe_reads_the_port_from_the_config_and_passes(scripted_server: tuple[Path, str]) -> None:
    config, key = scripted_server
    result = _probe({"CORRAL_CONFIG": str(config), "TEST_MASTER_KEY": key})
    assert result.returncode == 0, result.stderr
    port = next(line for line in config.read_text().splitlines() if "port:" in line).split("port: ")[1].rstrip("}")
    assert result.stdout.strip() == f"http://127.0.0.1:{port}/health: 200"


def test_probe_fails_when_nothing_listens(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text("version: 1\nserver:\n  port: 1\n")
    result = _probe({"CORRAL_CONFIG": str(config)})
    assert result.returncode == 1
    assert result.stderr.startswith("http://127.0.0.1:1/health:")
    override = _probe({"CORRAL_CONFIG": str(config), "CORRAL_PORT": "2"})
    assert override.returncode == 1 and override.stderr.startswith("http://127.0.0.1:2/health:")


def test_probe_reports_an_unreadable_config(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text("version: 1\nserver:\n  port: not-a-port\n")
    result = _probe({"CORRAL_CONFIG": str(config)})
    assert result.returncode == 1
    assert "cannot read the config" in result.stderr
