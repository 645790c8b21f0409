"""docs/deployment.md and docs/clients.md stay true: every `corral ...` command they show
exists with the options they use, and every install.sh flag they use is accepted."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from corral.cli.main import build_app

DOCS = Path(__file__).resolve().parents[2] / "docs"
INSTALL = Path(__file__).resolve().parents[2] / "deploy" / "install.sh"


def _shell_lines(name: str) -> list[str]:
    text = (DOCS / name).read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _invocations(name: str, program: str) -> list[list[str]]:
    found = []
    for line in _shell_lines(name):
        words = shlex.split(line.replace("$(date +%F)", "DATE"))
        # The program must be the command itself: after `sudo` or VAR=value, never an argument.
        while words and (words[0] == "sudo" or "=" in words[0]):
            words = words[1:]
        if words and (words[0] == program or (program.endswith(".sh") and words[0].endswith(f"/{program}"))):
            found.append(words[1:])
    return found


@pytest.mark.parametrize("doc", ["deployment.md", "clients.md"])
def test_documented_corral_commands_exist_with_their_options(doc: str) -> None:
    root = typer.main.get_command(build_app())
    invocations = _invocations(doc, "corral")
    assert invocations
    for words in invocations:
        command: Any = root
        rest = list(words)
        # Typer vendors its own click: walk groups by their `commands` mapping.
        while getattr(command, "commands", None) and rest and not rest[0].startswith("-"):
            sub = command.commands.get(rest.pop(0))
            assert sub is not None, f"{doc}: no command `corral {' '.join(words)}`"
            command = sub
        known = {opt for param in command.params for opt in getattr(param, "opts", [])}
        known |= {opt for param in command.params for opt in getattr(param, "secondary_opts", [])}
        for word in rest:
            if word.startswith("-"):
                assert word.split("=")[0] in known, f"{doc}: `corral {' '.join(words)}`: unknown option {word}"


def test_documented_install_flags_are_accepted() -> None:
    script = INSTALL.read_text()
    invocations = _invocations("deployment.md", "install.sh")
    assert len(invocations) >= 4
    for words in invocations:
        for word in words:
            if word.startswith("--"):
                assert f"    {word})" in script or f"    {word}) " in script, f"install.sh has no {word}"
