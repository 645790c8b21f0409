"""Structured output: the final answer parsed as JSON and checked against the schema."""

from __future__ import annotations

import json
from typing import Any


def check_output(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """``(value, None)`` when valid, else ``(None, what is wrong)``."""
    candidate = _strip_fence(text.strip())
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg} at position {exc.pos})"
    import jsonschema  # imported when an agent has an output schema, not at start-up

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(root)"
        return None, f"{where}: {first.message}"
    return value, None


def _strip_fence(text: str) -> str:
    """Models often wrap JSON in a Markdown code fence."""
    if text.startswith("```"):
        body = text.split("\n", 1)[1] if "\n" in text else ""
        return body.rsplit("```", 1)[0].strip()
    return text
