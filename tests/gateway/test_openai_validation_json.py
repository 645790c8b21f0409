"""`validate_chat_json` (pydantic parsing the body itself) must answer as
`validate_chat(parse_json(...))` does, success and every error; only the messages name
JSON's types (an array, an object) where Python's validation names Python's."""

from __future__ import annotations

import pytest

from corral.gateway.errors import ApiError
from corral.gateway.openai_format import parse_json, validate_chat, validate_chat_json

BODIES = [
    b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5, "stream": true,'
    b' "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], "x_extra": 1}',
    b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},'
    b' {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}], "stop": "END", "max_tokens": "7"}',
    b'{"model": 5, "messages": []}',
    b'{"messages": "x", "model": "m"}',
    b'{"model": "m"}',
    b'{"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}',
    b'{"model": "m", "messages": [], "temperature": "hot"}',
    b"[1, 2]",
    b'"text"',
]


def outcome(call: object) -> object:
    try:
        return ("ok", call())  # type: ignore[operator]
    except ApiError as exc:
        message = exc.message.replace("a valid array", "a valid list").replace("an object", "a valid dictionary")
        return ("error", exc.status, exc.code, exc.param, message)


@pytest.mark.parametrize("raw", BODIES)
def test_the_one_pass_validation_answers_as_the_two_pass_one(raw: bytes) -> None:
    assert outcome(lambda: validate_chat_json(raw)) == outcome(lambda: validate_chat(parse_json(raw)))


@pytest.mark.parametrize("raw", [b'{"model": "m", "messages": [', b"", b"{'model': 1}", b"nul"])
def test_a_body_that_is_not_json_is_invalid_json(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        validate_chat_json(raw)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
    assert caught.value.message.startswith("We could not parse the JSON body of your request:")
