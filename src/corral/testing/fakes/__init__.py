"""Fake upstream LLM servers that speak the vendors' documented wire formats on
127.0.0.1, so agents and gateways can be tested offline::

    from corral.testing.fakes import FakeOpenAI, Reply, ReplyToolCall

    async with FakeOpenAI(Reply(text="Hello!"), Reply.error(429, retry_after=2)) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="x")
        ...
        assert fake.last_request.body["model"] == "gpt-4o-mini"

Each fake answers a queue of scripted `Reply` objects (then ``default``, an echo),
records every request it receives, and runs as a real HTTP server in a background
thread (``with`` works as well as ``async with``).
"""

from corral.testing.fakes._script import RecordedRequest, Reply, ReplyToolCall
from corral.testing.fakes._server import FakeUpstream
from corral.testing.fakes.anthropic import FakeAnthropic
from corral.testing.fakes.gemini import FakeGemini
from corral.testing.fakes.openai import FakeOpenAI

__all__ = [
    "FakeAnthropic",
    "FakeGemini",
    "FakeOpenAI",
    "FakeUpstream",
    "RecordedRequest",
    "Reply",
    "ReplyToolCall",
]
