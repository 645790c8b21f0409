"""Every `corral` command and flag the README shows exists (so the README stays true),
and the files it names are there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli.main import build_app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in re.split(r"&&|\|\||;", line):
                text = part.strip().removeprefix("sudo ").removeprefix("(")
                if text.startswith("corral "):
                    commands.append(shlex.split(text.split(" > ")[0]))
    return commands


def _command_path(words: list[str], runner: CliRunner) -> tuple[list[str], str]:
    """The longest prefix of subcommands that --help accepts, and its help text."""
    app = build_app()
    path: list[str] = []
    help_text = runner.invoke(app, ["--help"]).output
    for word in words[1:]:
        if word.startswith("-"):
            break
        result = runner.invoke(app, [*path, word, "--help"])
        if result.exit_code != 0:
            break
        path.append(word)
        help_text = result.output
    return path, help_text


@pytest.mark.parametrize("words", readme_commands(), ids=lambda w: " ".join(w[:3]))
def test_readme_command_and_its_flags_exist(words: list[str]) -> None:
    runner = CliRunner()
    path, help_text = _command_path(words, runner)
    assert path, f"`{' '.join(words)}`: no such command"
    flags = [w.split("=")[0] for w in words if w.startswith("--")]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", help_text)
    for flag in flags:
        assert flag in plain, f"`{' '.join(words)}`: {flag} is not an option of `corral {' '.join(path)}`"


def test_readme_finds_commands_and_names_existing_files() -> None:
    assert len(readme_commands()) >= 15
    for name in re.findall(r"\((docs/[\w./-]+\.md)(?:#[\w-]+)?\)", README) + re.findall(r"(examples/[\w/.-]+\.yaml)", README):
        assert (ROOT / name).is_file(), name
    assert (ROOT / "deploy" / "install.sh").is_file()
