"""The request models written for the routes that check their input by hand (the runs
API) refuse what those handlers answer with a 500 today, and accept what they serve."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from corral.gateway.openapi.control import RunApproveBody, RunCreateBody, SessionListQuery


@pytest.mark.parametrize("body", [
    {"input": "hi", "timeout": "abc"},  # float("abc") in the handler: a 500
    {"input": "hi", "variables": [1, 2]},  # dict([1, 2]): a 500
    {"input": "hi", "variables": {"n": 2**70}},  # stored, then read back as a float
    {"messages": []},
    {"messages": [{"content": "no role"}]},
    {"input": "hi", "mode": "later"},
    {"input": "hi", "unknown": 1},
])
def test_run_bodies_the_handler_cannot_serve_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RunCreateBody.model_validate(body)


def test_run_bodies_the_handler_serves_are_accepted() -> None:
    body = RunCreateBody.model_validate({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                         "mode": "stream", "session_id": "s1", "variables": {"topic": "x", "n": 3},
                                         "timeout": 2.5})
    assert body.mode == "stream" and body.messages is not None and body.messages[0].role == "user"
    assert RunCreateBody.model_validate({}).mode == "wait"


def test_approvals_and_session_listing_are_checked() -> None:
    assert RunApproveBody.model_validate({"decisions": {"call_1": False}, "wait": True}).decisions == {"call_1": False}
    with pytest.raises(ValidationError):
        RunApproveBody.model_validate({"decisions": {"call_1": "yes"}})
    with pytest.raises(ValidationError):
        RunApproveBody.model_validate({"wait": True, "timeout": "x"})
    with pytest.raises(ValidationError):
        SessionListQuery.model_validate({"limit": -5})
    assert SessionListQuery.model_validate({"limit": "20"}).limit == 20
