"""Filter, prefix, approval and timeout wrappers, as built from config."""

from __future__ import annotations

import pytest

from corral.config.agents import FilesToolConfig
from corral.tools.base import ToolContext, ToolError
from corral.tools.build import build_toolset


async def test_config_wrappers_filter_prefix_and_mark_approval(tmp_path) -> None:
    config = FilesToolConfig(type="files", root=str(tmp_path), include=["*_file", "list_*"], exclude=["write_file"],
                             prefix="ws", require_approval=["list_files"], timeout=3)
    toolset = build_toolset("ws", config)
    tools = {t.name: t for t in await toolset.list_tools()}
    assert sorted(tools) == ["ws_list_files", "ws_read_file"]
    assert tools["ws_list_files"].requires_approval and not tools["ws_read_file"].requires_approval
    assert {t.timeout for t in tools.values()} == {3}
    (tmp_path / "a.txt").write_text("x")
    result = await toolset.call("ws_read_file", {"path": "a.txt"}, ToolContext())
    assert '"content": "x"' in result.content
    with pytest.raises(ToolError, match="not available"):
        await toolset.call("ws_write_file", {"path": "b", "content": "y"}, ToolContext())
    with pytest.raises(ToolError, match="not available"):
        await toolset.call("read_file", {"path": "a.txt"}, ToolContext())
