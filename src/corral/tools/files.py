"""The ``files`` tools: read, write and list inside one workspace directory.

Every path is resolved (following symlinks) and must stay inside the resolved root,
so neither ``..`` nor a symlink pointing outside can escape it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.config.agents import FilesToolConfig
from corral.llm.types import ToolSpec
from corral.tools.base import FunctionToolset, ToolContext, ToolError, ToolResult

_PATH = {"type": "string", "description": "a path relative to the workspace"}
READ_SPEC = ToolSpec("read_file", "Read a text file from the workspace.",
                     {"type": "object", "required": ["path"], "properties": {"path": _PATH}})
WRITE_SPEC = ToolSpec("write_file", "Write (create or replace) a text file in the workspace.",
                      {"type": "object", "required": ["path", "content"],
                       "properties": {"path": _PATH, "content": {"type": "string"}}})
LIST_SPEC = ToolSpec("list_files", "List the entries of a workspace directory.",
                     {"type": "object", "properties": {"path": _PATH}})


def resolve_inside(root: Path, relative: str) -> Path:
    if Path(relative).is_absolute():
        raise ToolError(f"absolute paths are not allowed: {relative!r}")
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise ToolError(f"path {relative!r} is outside the workspace")
    return target


def files_toolset(name: str, config: FilesToolConfig) -> FunctionToolset:
    root = Path(config.root).expanduser().resolve()

    async def read(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        path = resolve_inside(root, str(arguments.get("path") or ""))
        if not path.is_file():
            raise ToolError(f"no such file: {arguments.get('path')!r}")
        with path.open("rb") as handle:
            data = handle.read(config.max_bytes + 1)
        text = data[:config.max_bytes].decode("utf-8", errors="replace")
        return ToolResult.json({"path": str(path.relative_to(root)), "content": text,
                                "truncated": len(data) > config.max_bytes})

    async def write(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        if config.read_only:
            raise ToolError("the workspace is read-only")
        path = resolve_inside(root, str(arguments.get("path") or ""))
        content = str(arguments.get("content") or "")
        if len(content.encode()) > config.max_bytes:
            raise ToolError(f"content is larger than the limit of {config.max_bytes} bytes")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return ToolResult.json({"path": str(path.relative_to(root)), "bytes": len(content.encode())})

    async def listing(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        path = resolve_inside(root, str(arguments.get("path") or "."))
        if not path.is_dir():
            raise ToolError(f"no such directory: {arguments.get('path')!r}")
        entries = [{"name": p.name, "type": "dir" if p.is_dir() else "file"} for p in sorted(path.iterdir())]
        return ToolResult.json({"path": str(path.relative_to(root)) or ".", "entries": entries})

    tools = {"read_file": (READ_SPEC, read), "list_files": (LIST_SPEC, listing)}
    if not config.read_only:
        tools["write_file"] = (WRITE_SPEC, write)
    return FunctionToolset(name, tools)
