"""The `knowledge` tool type: `search_<base>` returns passages with their sources, so the
model can answer from them and cite where each fact came from."""

from __future__ import annotations

from typing import Any

from corral.config.agents import KnowledgeToolConfig
from corral.knowledge.service import KnowledgeService
from corral.knowledge.types import KnowledgeError
from corral.llm.types import ToolSpec
from corral.tools.base import FunctionToolset, ToolContext, ToolError, ToolResult


def tool_name(base: str) -> str:
    return "search_" + "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in base)


def knowledge_toolset(name: str, config: KnowledgeToolConfig, service: KnowledgeService) -> FunctionToolset:
    base = service.base(config.base)
    about = config.description or base.config.description or f"the {config.base!r} knowledge base"
    spec = ToolSpec(
        name=tool_name(config.base),
        description=(f"Search {about}. Returns the most relevant passages, each with its source; "
                     "cite the source of what you use."),
        parameters={"type": "object", "required": ["query"], "properties": {
            "query": {"type": "string", "description": "What to look for, in plain words."},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 20, "description": "How many passages."},
            "filter": {"type": "object", "description": "Metadata that passages must have, e.g. {\"kind\": \"code\"}."},
        }},
    )

    async def search(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        text = arguments.get("query")
        if not isinstance(text, str) or not text.strip():
            raise ToolError("'query' must be a non-empty string")
        top_k = arguments.get("top_k")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 20):
            raise ToolError("'top_k' must be an integer from 1 to 20")
        try:
            hits = await service.query(config.base, text, top_k=top_k or config.top_k, flt=arguments.get("filter"))
        except KnowledgeError as exc:
            raise ToolError(str(exc)) from None
        passages, used = [], 0
        for hit in hits:
            room = config.max_chars - used
            if room <= 0:
                break
            passages.append({"source": hit.source, "text": hit.text[:room], "score": round(hit.score, 4),
                             **({"heading": hit.metadata["heading"]} if "heading" in hit.metadata else {})})
            used += min(len(hit.text), room)
        return ToolResult.json({"query": text, "passages": passages})

    return FunctionToolset(name, {spec.name: (spec, search)})
