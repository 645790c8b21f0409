"""Every YAML example in docs/agents.md and docs/tools.md loads and validates, and the
Python toolset example works as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.agents.registry import AgentRegistry
from corral.config.agent_refs import check_agent_references
from corral.config.loader import load_config, parse_source
from corral.tools.base import ToolContext

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```(yaml|python)\n(.*?)```", re.S)


def blocks(kind: str) -> list[tuple[str, int, str]]:
    found = []
    for name in ("agents.md", "tools.md"):
        text = (DOCS / name).read_text()
        for match in BLOCK.finditer(text):
            if match.group(1) == kind:
                found.append((name, text[:match.start()].count("\n") + 1, match.group(2)))
    return found


@pytest.mark.parametrize(("doc", "line", "text"), blocks("yaml"), ids=lambda v: str(v)[:20])
def test_yaml_example_loads_and_builds_its_agents(doc: str, line: int, text: str, tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(text)
    loaded = load_config(path, env={})
    source = parse_source(text, str(path), {})
    assert check_agent_references(source.data, str(path), source.line_of) == [], f"{doc}:{line}"
    registry = AgentRegistry.from_config(loaded.config)
    assert set(registry.agents) == set(loaded.config.agents)


def test_there_are_examples_to_check() -> None:
    assert len(blocks("yaml")) >= 8


async def test_python_toolset_example_runs() -> None:
    example = next(text for doc, _, text in blocks("python") if "FunctionToolset" in text)
    namespace: dict[str, object] = {}
    exec(compile(example, "docs/tools.md", "exec"), namespace)
    math = namespace["math"]
    result = await math.call("add", {"a": 2, "b": 3}, ToolContext())  # type: ignore[attr-defined]
    assert result.data == {"sum": 5}
