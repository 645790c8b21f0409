"""Agent cross-reference checks name the file, line and key of each problem."""

from __future__ import annotations

from corral.config.agent_refs import check_agent_references
from corral.config.loader import parse_source

CONFIG = """\
tools:
  clock: {type: time}
agents:
  assistant:
    model: m
    tools: [clock, time, clokc, shell]
    agent_tools: [helper, ghost, assistant]
  helper:
    model: m
  far:
    type: remote
    url: http://elsewhere/a2a/x
    tools: [clock]
"""


def test_unknown_toolsets_agents_and_remote_misuse_are_reported_with_lines() -> None:
    source = parse_source(CONFIG, "corral.yaml", {})
    issues = check_agent_references(source.data, source.file, source.line_of)
    found = [(i.line, i.key, i.message) for i in issues]
    assert found == [
        (6, "agents.assistant.tools[2]", "unknown toolset 'clokc' (did you mean 'clock'?)"),
        (6, "agents.assistant.tools[3]", "unknown toolset 'shell'; declare it under `tools:`"),
        (7, "agents.assistant.agent_tools[1]", "unknown agent 'ghost'"),
        (7, "agents.assistant.agent_tools[2]", "'assistant' cannot call itself as a tool"),
        (13, "agents.far.tools", "a remote agent runs elsewhere: tools has no effect here"),
    ]
