from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from corral.cli.main import build_app


def test_db_current_then_upgrade_then_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    app = build_app()
    before = runner.invoke(app, ["db", "current", "--url", url])
    assert before.exit_code == 0, before.output
    assert before.output.startswith("empty (behind")
    upgraded = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.output.strip() == "database at revision 0003 (was empty)"
    after = runner.invoke(app, ["db", "current", "--url", url])
    assert after.output.strip() == "0003 (up to date)"
    again = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert again.output.strip() == "database at revision 0003"
