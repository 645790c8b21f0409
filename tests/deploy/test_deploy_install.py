"""deploy/install.sh --dry-run: prints every action in order and changes nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "install.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False)


def test_dry_run_prints_each_step_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = _run("--all", "--dry-run", "--prefix", f"{root}/opt", "--config-dir", f"{root}/etc",
                  "--data-dir", f"{root}/data", "--log-dir", f"{root}/log", "--unit-dir", f"{root}/units",
                  "--user", "corral-test-user-that-does-not-exist", "--source", "corral==0.1.0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "# dry run: nothing is changed"
    corral = f"{root}/opt/venv/bin/corral"
    expected = [
        "+ useradd --system --user-group --home-dir " + f"{root}/data --no-create-home --shell /usr/sbin/nologin "
        "--comment Corral\\ services corral-test-user-that-does-not-exist",
        f"+ install -d -m 0755 {root}/opt",
        f"+ install -d -m 0750 -o root -g corral-test-user-that-does-not-exist {root}/etc",
        f"+ install -d -m 0750 -o corral-test-user-that-does-not-exist -g corral-test-user-that-does-not-exist "
        f"{root}/data",
        f"+ python3 -m venv {root}/opt/venv",
        f"+ {root}/opt/venv/bin/pip install --upgrade corral==0.1.0",
        f"+ {corral} generate template serve > {root}/etc/corral.yaml  (mode 0640, owner root:corral-test-user-that-does-not-exist)",
        f"+ {corral} generate template supervisor > {root}/etc/supervisor.yaml  (mode 0640, owner "
        "root:corral-test-user-that-does-not-exist)",
        f"+ {corral} generate template node > {root}/etc/node.yaml  (mode 0640, owner "
        "root:corral-test-user-that-does-not-exist)",
        f"+ {corral} generate env --role serve --role supervisor --role node --config {root}/etc/corral.yaml > "
        f"{root}/etc/corral.env  (mode 0600, owner root:root)",
        f"+ {corral} generate systemd --role serve --role supervisor --role node --out {root}/units --prefix "
        f"{root}/opt --config-dir {root}/etc --data-dir {root}/data --log-dir {root}/log --user "
        f"corral-test-user-that-does-not-exist --config {root}/etc/corral.yaml --supervisor-config "
        f"{root}/etc/supervisor.yaml --node-config {root}/etc/node.yaml",
        "+ systemctl daemon-reload",
        "+ systemctl enable corral.service corral-supervisor.service corral-node.service",
    ]
    actions = [line for line in lines if line.startswith("+ ")]
    for line in expected:
        assert line in actions, line
    assert [actions.index(line) for line in expected] == sorted(actions.index(line) for line in expected)
    assert not any("systemctl start" in line for line in actions)  # only with --start
    assert not root.exists()


def test_one_role_installs_only_its_unit_and_config(tmp_path: Path) -> None:
    result = _run("--supervisor", "--dry-run", "--prefix", str(tmp_path / "p"), "--start")
    assert result.returncode == 0, result.stderr
    actions = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert any(line.endswith("generate template supervisor > /etc/corral/supervisor.yaml  (mode 0640, owner "
                              "root:corral)") for line in actions)
    assert not any("template serve" in line or "template node" in line for line in actions)
    assert "+ systemctl enable corral-supervisor.service" in actions
    assert actions[-1] == "+ systemctl start corral-supervisor.service"


def test_bad_invocations_fail_with_a_reason() -> None:
    missing = _run("--dry-run")
    assert missing.returncode == 2 and "choose at least one of" in missing.stderr
    unknown = _run("--serve", "--dry-run", "--bogus")
    assert unknown.returncode == 2 and "unknown option: --bogus" in unknown.stderr
    relative = _run("--serve", "--dry-run", "--data-dir", "relative/dir")
    assert relative.returncode == 2 and "absolute" in relative.stderr
