"""Config errors that point at the line to fix.

Every problem found while loading a config becomes a `ConfigIssue` (file, line, key
path, message); the loader collects them all and raises one `ConfigError`, so a user
fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Keys whose values are never echoed back in messages or `config show`: the redactor's rule.
from corral.telemetry.redact import is_secret_key as is_secret_key

KeyPath = tuple[str | int, ...]


def render_key(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    matches = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str | None
    line: int | None
    path: KeyPath
    message: str

    @property
    def key(self) -> str:
        return render_key(self.path)

    def render(self) -> str:
        where = self.file or "<config>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where} {self.key}: {self.message}" if self.path else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "key": self.key, "path": list(self.path),
                "message": self.message}


class ConfigError(Exception):
    """One or more config problems; `str()` gives one line per issue."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file or "", i.line or 0))
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(issue.render() for issue in self.issues)


# ---- pydantic errors -> readable messages ---------------------------------

QUOTED = re.compile(r"'([^']*)'")


def pydantic_message(error: Any, allowed_keys: Sequence[str] | None) -> str:
    """A message for one pydantic error dict (``ValidationError.errors()`` item).

    ``allowed_keys`` are the valid keys of the mapping an unknown key was found in.
    """
    kind = error.get("type", "")
    loc = error.get("loc", ())
    name = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        hint = did_you_mean(str(name), allowed_keys or ())
        return f"unknown key {name!r}{hint}"
    if kind == "missing":
        return "required key is missing"
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = message[:1].lower() + message[1:]
    value = error.get("input")
    if kind == "literal_error" and isinstance(value, str):
        expected = QUOTED.findall(str(error.get("ctx", {}).get("expected", "")))
        return f"{message}; got {value!r}{did_you_mean(value, expected)}"
    secret = any(is_secret_key(part) for part in loc)
    if not secret and isinstance(value, str | int | float | bool) and not message.startswith("unknown"):
        message += f" (got {value!r})"
    return message
