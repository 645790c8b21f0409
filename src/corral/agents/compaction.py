"""Context compaction: when the conversation nears the model's context window, the
older turns are summarised by the agent's own model and replaced by the summary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from corral.agents.events import Compacted, RunEvent
from corral.agents.spec import Agent, RunState
from corral.llm.router import CallContext
from corral.llm.tokens import estimate_text_tokens, estimate_tokens
from corral.llm.types import ChatRequest, Message

if TYPE_CHECKING:
    from corral.agents.runner import Models

DEFAULT_WINDOW = 128_000
SUMMARY_PREFIX = "[Summary of the earlier conversation]\n"
SUMMARY_INSTRUCTIONS = (
    "Summarise the conversation below for the assistant who will continue it. Keep every fact, decision, "
    "name, number and open question; drop pleasantries. Write plain prose."
)


def split_point(messages: list[Message], keep: int) -> int:
    """Index where the kept tail starts; never between a tool call and its results."""
    cut = max(0, len(messages) - keep)
    while 0 < cut < len(messages) and messages[cut].role == "tool":
        cut -= 1
    return cut


async def compact(agent: Agent, state: RunState, models: Models, ctx: CallContext) -> AsyncIterator[RunEvent]:
    settings = agent.config.compaction
    if not settings.enabled:
        return
    window = settings.context_window or models.context_window(agent.model) or DEFAULT_WINDOW
    before = estimate_tokens(state.messages) + estimate_text_tokens(agent.instructions)
    if before < settings.threshold * window:
        return
    cut = split_point(state.messages, settings.keep_recent)
    if cut < 2:
        return
    old, recent = state.messages[:cut], state.messages[cut:]
    transcript = "\n".join(_line(m) for m in old)
    request = ChatRequest(model=agent.model, messages=[Message.text("system", SUMMARY_INSTRUCTIONS),
                                                        Message.text("user", transcript)])
    result = await models.complete(agent.model, request, ctx)
    state.usage = state.usage + result.usage
    summary = Message.text("user", SUMMARY_PREFIX + result.message.text_content)
    state.messages = [summary, *recent]
    # Messages of this run that were summarised before being saved survive only in the summary.
    state.base = state.base - cut + 1 if state.base >= cut else 1
    state.compacted = True
    yield Compacted(len(old), len(recent), before, estimate_tokens(state.messages))


def _line(message: Message) -> str:
    text = message.text_content
    if message.tool_calls:
        text += " " + "; ".join(f"called {c.name}({c.arguments})" for c in message.tool_calls)
    return f"{message.role}: {text}".strip()
