"""``${VAR}`` substitution in config strings, with the forms Docker Compose users know.

- ``${VAR}``: the value, or empty when unset (the loader notes it; when the whole value
  of a key is one unset ``${VAR}`` the key is left out so its default applies)
- ``${VAR:-default}`` / ``${VAR-default}``: default when unset or empty / only when unset
- ``${VAR:?message}`` / ``${VAR?message}``: an error naming the key when unset or empty /
  only when unset
- ``$${`` is a literal ``${``; any other ``$`` is kept as written (keys often hold ``$``)

Defaults may themselves contain ``${...}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SubstitutionError(ValueError):
    pass


@dataclass(slots=True)
class Substitution:
    value: str
    unset: list[str] = field(default_factory=list)  # plain ${VAR} references that were unset
    whole_unset: bool = False  # the string was exactly one unset plain ${VAR}


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    raise SubstitutionError(f"unclosed '${{' in {text!r}")


def _expand(expr: str, env: Mapping[str, str], result: Substitution) -> str:
    match = _NAME.match(expr)
    if match is None:
        raise SubstitutionError(f"bad substitution '${{{expr}}}': expected a variable name")
    name, rest = match.group(), expr[match.end():]
    value = env.get(name)
    if not rest:
        if value is None:
            result.unset.append(name)
            return ""
        return value
    for op in (":-", "-", ":?", "?"):
        if rest.startswith(op):
            argument = rest[len(op):]
            missing = value is None or (op.startswith(":") and value == "")
            if not missing:
                return value or ""
            if op.endswith("-"):
                return _substitute(argument, env, result)
            detail = f": {argument}" if argument else ""
            state = "not set" if value is None else "empty"
            raise SubstitutionError(f"{name} is {state}{detail}")
    raise SubstitutionError(f"bad substitution '${{{expr}}}': use ${{VAR}}, ${{VAR:-default}} or ${{VAR:?message}}")


def _substitute(text: str, env: Mapping[str, str], result: Substitution) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        if text.startswith("$${", index):
            out.append("${")
            index += 3
        elif text.startswith("${", index):
            end = _closing_brace(text, index + 1)
            out.append(_expand(text[index + 2:end], env, result))
            index = end + 1
        else:
            next_dollar = text.find("$", index + 1)
            stop = len(text) if next_dollar == -1 else next_dollar
            out.append(text[index:stop])
            index = stop
    return "".join(out)


def substitute(text: str, env: Mapping[str, str]) -> Substitution:
    """Expand ``text``; raises `SubstitutionError` for ``:?`` on a missing variable or bad syntax."""
    result = Substitution(value="")
    if "$" not in text:
        result.value = text
        return result
    result.value = _substitute(text, env, result)
    stripped = text.strip()
    if (stripped.startswith("${") and stripped.endswith("}") and _NAME.fullmatch(stripped[2:-1])
            and result.unset):
        result.whole_unset = True
    return result
