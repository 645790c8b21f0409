"""Cross-reference checks for the agent runtime's config sections, for the config
loader to call beside its own (`corral.config.references.check_references`).

They run on the raw parsed data so that they report together with schema errors,
each naming file, line and key: an agent's unknown toolset, an unknown agent in
``agent_tools``, a remote agent used as a model-backed agent's tool without a URL...
(``model`` and ``sub_agents`` are checked by the loader itself.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from corral.config.agents import BARE_BUILTINS
from corral.config.errors import ConfigIssue, KeyPath, did_you_mean

LineOf = Callable[[KeyPath], int | None]


def check_agent_references(data: Mapping[str, Any], file: str | None, line_of: LineOf) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []

    def add(path: KeyPath, message: str) -> None:
        issues.append(ConfigIssue(file, line_of(path), path, message))

    agents = _dict(data.get("agents"))
    toolsets = _dict(data.get("tools"))
    known_tools = [*toolsets, *(b for b in BARE_BUILTINS if b not in toolsets)]
    for name, agent in agents.items():
        if not isinstance(agent, dict):
            continue
        for index, tool in enumerate(_list(agent.get("tools"))):
            if isinstance(tool, str) and tool not in known_tools:
                hint = did_you_mean(tool, known_tools) or (
                    "; declare it under `tools:`" if tool in ("shell", "files") else "")
                add(("agents", name, "tools", index), f"unknown toolset {tool!r}{hint}")
        for index, other in enumerate(_list(agent.get("agent_tools"))):
            if other == name:
                add(("agents", name, "agent_tools", index), f"{name!r} cannot call itself as a tool")
            elif isinstance(other, str) and other not in agents:
                add(("agents", name, "agent_tools", index), f"unknown agent {other!r}{did_you_mean(other, agents)}")
        instructions_file = agent.get("instructions_file")
        if (isinstance(instructions_file, str) and instructions_file and agent.get("type") != "remote"
                and not Path(instructions_file).expanduser().is_file()):
            add(("agents", name, "instructions_file"), f"file not found: {instructions_file}")
        if agent.get("type") == "remote":
            for key in ("tools", "sub_agents", "agent_tools", "instructions", "instructions_file", "output_schema"):
                if agent.get(key):
                    add(("agents", name, key), f"a remote agent runs elsewhere: {key} has no effect here")
    return issues


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}
