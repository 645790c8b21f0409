"""`ChatRequest.for_upstream`: the router's per-attempt copy, written out for speed."""

from __future__ import annotations

import dataclasses

from corral.llm.router import _with_params
from corral.llm.types import ChatRequest, Message, Reasoning, ToolSpec


def full_request() -> ChatRequest:
    return ChatRequest(model="alias", messages=[Message.text("user", "hi")],
                       tools=[ToolSpec(name="t", description="d", parameters={"type": "object"})],
                       tool_choice="auto", parallel_tool_calls=False, temperature=0.5, top_p=0.9, max_tokens=7,
                       stop=["x"], seed=3, response_format={"type": "json_object"}, user="u",
                       extra={"logprobs": True}, timeout=12.0, reasoning=Reasoning(effort="high"))


def test_for_upstream_copies_every_field_but_the_model_and_owns_its_extra() -> None:
    request = full_request()
    for field in dataclasses.fields(ChatRequest):  # a new field left unset here would be copied unchecked
        assert getattr(request, field.name) != field.default, field.name
    copy = request.for_upstream("gpt-upstream")
    assert copy == dataclasses.replace(request, model="gpt-upstream")
    copy.extra["added"] = 1
    assert request.extra == {"logprobs": True}


def test_alias_params_are_defaults_the_client_overrides() -> None:
    request = ChatRequest(model="alias", messages=[], temperature=0.1, extra={"a": 1})
    upstream = _with_params(request, "m", {"temperature": 0.9, "max_tokens": 5, "a": 2, "b": 3})
    assert (upstream.model, upstream.temperature, upstream.max_tokens) == ("m", 0.1, 5)
    assert upstream.extra == {"a": 1, "b": 3} and request.extra == {"a": 1} and request.max_tokens is None
