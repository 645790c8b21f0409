"""The `agents:`, `tools:` and `runs:` sections. Owned by the agent runtime (`corral.agents`).

``tools:`` declares named toolsets (built-ins with their limits, MCP servers); an
agent lists the toolsets it may use by name. The built-ins ``time`` and
``http_fetch`` may be listed without a declaration (they then use their defaults);
``shell`` and ``files`` must be declared, because they need an allowlist or a
workspace.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BARE_BUILTINS = ("time", "http_fetch")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _ToolsetCommon(_Strict):
    include: list[str] | None = None  # only these tools (names before the prefix)
    exclude: list[str] = Field(default_factory=list)
    prefix: str | None = None  # tool names become "<prefix>_<name>"
    # true: every tool of the set needs approval; a list: only these tools
    require_approval: bool | list[str] = False
    timeout: float = Field(default=30.0, gt=0)  # seconds per tool call
    description: str | None = None


class TimeToolConfig(_ToolsetCommon):
    type: Literal["time"]


class HttpFetchToolConfig(_ToolsetCommon):
    type: Literal["http_fetch"]
    allow_hosts: list[str] | None = None  # None: any host not denied; "*.example.com" matches subdomains
    # Cloud metadata endpoints are the classic target of server-side request forgery.
    deny_hosts: list[str] = Field(default_factory=lambda: ["169.254.0.0/16", "metadata.google.internal"])
    max_bytes: int = Field(default=1_000_000, ge=1)
    methods: list[str] = Field(default_factory=lambda: ["GET"])


class ShellToolConfig(_ToolsetCommon):
    type: Literal["shell"]
    allow_commands: list[str] = Field(default_factory=list)  # program names; empty: every command is denied
    working_dir: str | None = None
    max_output_bytes: int = Field(default=64_000, ge=1)
    env: dict[str, str] = Field(default_factory=dict)


class FilesToolConfig(_ToolsetCommon):
    type: Literal["files"]
    root: str
    read_only: bool = False
    max_bytes: int = Field(default=1_000_000, ge=1)


class McpToolConfig(_ToolsetCommon):
    type: Literal["mcp"]
    transport: Literal["stdio", "streamable-http", "sse"] | None = None  # default: stdio with command, else http
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    connect_timeout: float = Field(default=60.0, gt=0)
    reconnect_attempts: int = Field(default=2, ge=0)

    @model_validator(mode="after")
    def _endpoint(self) -> McpToolConfig:
        if self.resolved_transport == "stdio" and not self.command:
            raise ValueError("an stdio MCP server needs a command")
        if self.resolved_transport != "stdio" and not self.url:
            raise ValueError(f"a {self.resolved_transport} MCP server needs a url")
        return self

    @property
    def resolved_transport(self) -> str:
        if self.transport:
            return self.transport
        return "stdio" if self.command else "streamable-http"


class KnowledgeToolConfig(_ToolsetCommon):
    """A `search_<base>` tool over a knowledge base (`knowledge:`): passages with their sources."""

    type: Literal["knowledge"]
    base: str  # a knowledge base name from `knowledge:`
    top_k: int | None = Field(default=None, ge=1, le=50)  # default: the base's search.top_k
    max_chars: int = Field(default=12_000, ge=100)  # of passage text per call, so results fit the context


ToolsetConfig = Annotated[
    TimeToolConfig | HttpFetchToolConfig | ShellToolConfig | FilesToolConfig | McpToolConfig
    | KnowledgeToolConfig,
    Field(discriminator="type"),
]


class CompactionConfig(_Strict):
    enabled: bool = True
    threshold: float = Field(default=0.8, gt=0, le=1)  # of the model's context window
    keep_recent: int = Field(default=6, ge=1)  # messages kept verbatim after the summary
    context_window: int | None = Field(default=None, gt=0)  # default: the model's, else 128k


class AgentConfig(_Strict):
    type: Literal["llm", "remote"] = "llm"
    description: str = ""
    model: str | None = None
    instructions: str | None = None
    instructions_file: str | None = None
    tools: list[str] = Field(default_factory=list)  # toolset names from `tools:` (or a bare built-in)
    sub_agents: list[str] = Field(default_factory=list)  # hand-off targets: `transfer_to_<name>` tools
    agent_tools: list[str] = Field(default_factory=list)  # agents callable as a tool named after them
    output_schema: dict[str, Any] | None = None
    output_retries: int = Field(default=2, ge=0)
    max_iterations: int = Field(default=10, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    visibility: Literal["public", "internal"] = "public"
    timeout: float = Field(default=600.0, gt=0)  # seconds for a whole run
    tool_timeout: float | None = Field(default=None, gt=0)  # overrides the toolsets' per-call timeout
    require_approval: list[str] = Field(default_factory=list)  # tool names that pause the run for approval
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    mcp: bool = True  # served as a tool on /mcp (public agents only)
    # remote (A2A) agents
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _kind(self) -> AgentConfig:
        if self.type == "remote" and not self.url:
            raise ValueError("a remote agent needs the url of its A2A endpoint")
        if self.type == "llm" and not self.model:
            raise ValueError("needs a model (a model alias from `models:`)")
        if self.instructions and self.instructions_file:
            raise ValueError("give either instructions or instructions_file, not both")
        return self


class RunsConfig(_Strict):
    """Background runs: how many a replica works on at once, and the claim lease."""

    workers: int = Field(default=4, ge=0)  # 0: this replica claims no background runs
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval: float = Field(default=1.0, gt=0)
