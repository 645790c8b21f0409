"""The layers the llm package sits between (docs/architecture.md): `corral.config` and
`corral.telemetry` (layer 0) import nothing of `corral.llm`; `corral.llm` (layer 1)
imports neither the layers above it nor `corral.testing`; and no context variable in
`corral.llm` changes what a call does."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "corral"


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((SRC / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(SRC))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("config", ("corral.llm", "corral.store", "corral.agents", "corral.gateway", "corral.cli", "corral.testing")),
    ("telemetry", ("corral.llm", "corral.gateway", "corral.cli", "corral.testing")),
    ("llm", ("corral.testing", "corral.gateway", "corral.agents", "corral.tools", "corral.cli", "corral.fleet",
             "corral.boot", "corral.store")),
])
def test_a_layer_imports_nothing_above_it(package: str, forbidden: tuple[str, ...]) -> None:
    leaks = {f"{path}: {name}" for path, names in imported_modules(package).items() for name in names
             if name.startswith(forbidden)}
    assert leaks == set()


def test_no_context_variable_in_llm() -> None:
    uses = {path for path, names in imported_modules("llm").items() if "contextvars" in names}
    assert uses == set()


def test_the_one_redactor_depends_on_nothing_of_corral() -> None:
    """Every layer may call it (`corral.telemetry.redact`)."""
    assert {n for n in imported_modules("telemetry")["telemetry/redact.py"] if n.startswith("corral")} == set()
