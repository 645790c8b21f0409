"""Load `corral.yaml`: parse with line numbers, substitute ``${VAR}``, apply environment
overrides, validate, check cross-references, and report every problem at once.

``load_config(None)`` uses ``$CORRAL_CONFIG`` when set, else ``./corral.yaml``, and falls
back to zero-config mode (`corral.config.zero`) when neither exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from corral.config.agent_refs import check_agent_references
from corral.config.environment import apply_overrides, merged_env, read_dotenv, read_names, with_secret_files
from corral.config.errors import QUOTED, ConfigError, ConfigIssue, KeyPath, did_you_mean, pydantic_message
from corral.config.loaded import LoadedConfig
from corral.config.presets import PRESETS
from corral.config.references import check_references, drop_disabled, resolve_model_choice
from corral.config.schema import CorralConfig
from corral.config.substitute import SubstitutionError, substitute
from corral.config.zero import zero_config

__all__ = ["ConfigError", "ConfigIssue", "LoadedConfig", "find_config", "load_config"]

DEFAULT_CONFIG_NAME = "corral.yaml"
_DROP = object()  # a key whose whole value was one unset ${VAR}: left out so its default applies
_UNION_TAG = re.compile(r"^[\w-]+\[.*\]$")
ModelT = TypeVar("ModelT", bound=BaseModel)


def find_config(env: Mapping[str, str]) -> Path | None:
    """``$CORRAL_CONFIG`` (an explicit choice wins), else ``./corral.yaml``, else None
    (zero-config)."""
    configured = env.get("CORRAL_CONFIG")
    if configured:
        return Path(configured)
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def load_config(
    path: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    model: str | None = None,
    probe_ollama: bool = True,
) -> LoadedConfig:
    """Load and validate a config; raises `ConfigError` listing every problem.

    ``model`` picks the default model (``corral serve --model``); ``probe_ollama`` lets
    zero-config look for a local Ollama.
    """
    real_env = dict(os.environ if env is None else env)
    target = Path(path) if path is not None else find_config(real_env)
    if target is None:
        dotenv = read_dotenv(Path(".env")) if Path(".env").is_file() else {}
        env, file_notes, file_issues = with_secret_files(merged_env(real_env, dotenv), read_names())
        if file_issues:
            raise ConfigError(file_issues)
        loaded = zero_config(env, probe_ollama=probe_ollama, model=model)
        loaded.notes[:0] = file_notes
        if dotenv:
            loaded.notes.insert(0, f"loaded {len(dotenv)} variables from .env")
        return loaded
    return _load_file(target, real_env, model)


def _load_file(path: Path, real_env: Mapping[str, str], model: str | None) -> LoadedConfig:
    file = str(path)
    if not path.exists():
        raise ConfigError([ConfigIssue(file, None, (), "file not found")])
    if not path.is_file():
        raise ConfigError([ConfigIssue(file, None, (), "not a file")])
    notes: list[str] = []
    dotenv_path = path.parent / ".env"
    dotenv = read_dotenv(dotenv_path) if dotenv_path.is_file() else {}
    if dotenv:
        notes.append(f"loaded {len(dotenv)} variables from {dotenv_path}")
    env = merged_env(real_env, dotenv)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(file, None, (), f"cannot read: {exc}")]) from None
    env, file_notes, file_issues = with_secret_files(env, read_names(text))
    if file_issues:
        raise ConfigError(file_issues)
    notes.extend(file_notes)

    source = parse_source(text, file, env)
    _anchor_relative_paths(source.data, path.parent)
    notes.extend(source.notes)
    issues = list(source.issues)
    override_notes, override_issues = apply_overrides(source.data, env)
    notes.extend(override_notes)
    issues.extend(override_issues)
    config, validation_issues = validate(source.data, source.positions, file)
    issues.extend(validation_issues)
    issues.extend(check_references(source.data, file, source.line_of))
    issues.extend(check_agent_references(source.data, file, source.line_of))
    if issues or config is None:
        raise ConfigError(issues)
    config = drop_disabled(config, notes)
    if model is not None:
        config = resolve_model_choice(config, model)
    return LoadedConfig(config=config, path=path, zero_config=False, notes=notes, env=env)


def _anchor_relative_paths(data: dict[str, Any], base: Path) -> None:
    """An agent's relative `instructions_file` and a knowledge base's relative `sources`
    are relative to the config file, not to the directory `corral serve` happens to run in."""
    agents = data.get("agents")
    for agent in agents.values() if isinstance(agents, dict) else ():
        name = agent.get("instructions_file") if isinstance(agent, dict) else None
        if isinstance(name, str) and name and not Path(name).expanduser().is_absolute():
            agent["instructions_file"] = str((base / name).resolve())
    bases = data.get("knowledge")
    for knowledge in bases.values() if isinstance(bases, dict) else ():
        sources = knowledge.get("sources") if isinstance(knowledge, dict) else None
        if isinstance(sources, list):
            knowledge["sources"] = [str(base / s) if isinstance(s, str) and not Path(s).expanduser().is_absolute()
                                    else s for s in sources]


# ---- YAML with positions ----------------------------------------------------


@dataclass(slots=True)
class Source:
    file: str
    env: Mapping[str, str]
    data: dict[str, Any] = field(default_factory=dict)
    positions: dict[KeyPath, int] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int | None:
        return _nearest_line(path, self.positions)


def parse_source(text: str, file: str, env: Mapping[str, str]) -> Source:
    """Parse YAML into plain Python with ``${VAR}`` substituted, recording each key's line.

    A YAML syntax error raises `ConfigError` at once: nothing after it can be trusted.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    source = Source(file=file, env=env)
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        raise ConfigError([_syntax_issue(exc, file)]) from None
    except YAMLError as exc:
        raise ConfigError([ConfigIssue(file, None, (), f"invalid YAML: {exc}")]) from None
    source.positions[()] = 1
    if document is None:
        return source
    plain = _plain(document, (), 1, source)
    if not isinstance(plain, dict):
        source.issues.append(ConfigIssue(file, 1, (), "the top level must be a mapping of sections"))
        return source
    source.data = plain
    return source


def _syntax_issue(exc: Any, file: str) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = str(exc.problem or exc.context or "invalid YAML")
    duplicate = re.match(r'found duplicate key "(.*?)"', problem)
    if duplicate:
        first = exc.context_mark.line + 1 if exc.context_mark is not None else None
        problem = f"duplicate key {duplicate.group(1)!r}" + (f" (the mapping starts at line {first})" if first else "")
    elif exc.context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
        problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return ConfigIssue(file, line, (), f"invalid YAML: {problem}")


def _child_line(node: Any, key: Any, default: int) -> int:
    position = node.lc.data.get(key) if hasattr(node, "lc") else None
    return int(position[0]) + 1 if position else default


def _plain_key(key: Any) -> Any:
    if isinstance(key, int | float) and not isinstance(key, bool):
        return str(key)
    return str(key) if isinstance(key, str) else key


def _plain(node: Any, path: KeyPath, line: int, source: Source, *, in_list: bool = False) -> Any:
    from ruamel.yaml.comments import TaggedScalar
    from ruamel.yaml.scalarbool import ScalarBoolean

    if isinstance(node, Mapping):
        mapping: dict[Any, Any] = {}
        for key, value in node.items():
            name = _plain_key(key)
            key_line = _child_line(node, key, line)
            source.positions[(*path, name)] = key_line
            plain = _plain(value, (*path, name), key_line, source)
            if plain is not _DROP:
                mapping[name] = plain
        return mapping
    if isinstance(node, list):
        items = []
        for index, item in enumerate(node):
            item_line = _child_line(node, index, line)
            source.positions[(*path, index)] = item_line
            items.append(_plain(item, (*path, index), item_line, source, in_list=True))
        return items
    if isinstance(node, TaggedScalar):
        node = str(node.value)
    if isinstance(node, str):
        return _substituted(str(node), path, line, source, in_list=in_list)
    if isinstance(node, ScalarBoolean | bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, date):
        return node.isoformat()
    return node


def _substituted(text: str, path: KeyPath, line: int, source: Source, *, in_list: bool) -> Any:
    try:
        result = substitute(text, source.env)
    except SubstitutionError as exc:
        source.issues.append(ConfigIssue(source.file, line, path, str(exc)))
        return text
    for name in result.unset:
        source.notes.append(f"{name} is not set ({source.file}:{line} {_render(path)})")
    if result.whole_unset and not in_list:
        return _DROP
    return result.value


def _render(path: KeyPath) -> str:
    return ConfigIssue(None, None, path, "").key


# ---- validation ---------------------------------------------------------------


def validate(data: Mapping[str, Any], positions: Mapping[KeyPath, int], file: str | None
             ) -> tuple[CorralConfig | None, list[ConfigIssue]]:
    return validate_model(CorralConfig, data, positions, file)


def validate_model(root: type[ModelT], data: Mapping[str, Any], positions: Mapping[KeyPath, int],
                   file: str | None) -> tuple[ModelT | None, list[ConfigIssue]]:
    """Validate ``data`` as ``root``; every pydantic error becomes a file:line:key issue."""
    try:
        return root.model_validate(data), []
    except ValidationError as exc:
        issues = []
        for error in exc.errors(include_url=False):
            path, _ = schema_walk(tuple(error["loc"]), root)
            if error.get("type") == "union_tag_invalid":
                path = (*path, str(error.get("ctx", {}).get("discriminator", "type")).strip("'"))
            issues.append(ConfigIssue(file, _nearest_line(path, positions), path, _message(error, path, root)))
        return None, issues


def _nearest_line(path: KeyPath, positions: Mapping[KeyPath, int]) -> int | None:
    """The line of ``path``, or of its nearest ancestor that is in the file."""
    for end in range(len(path), -1, -1):
        if path[:end] in positions:
            return positions[path[:end]]
    return None


def _message(error: Any, path: KeyPath, root: type[BaseModel] = CorralConfig) -> str:
    kind, value, ctx = error.get("type"), error.get("input"), error.get("ctx") or {}
    is_provider_type = len(path) == 3 and path[0] == "providers" and path[2] == "type"
    if is_provider_type and kind == "value_error" and isinstance(value, str):
        hint = did_you_mean(value, PRESETS)
        return f"unknown provider type {value!r}" + (hint or f"; one of: {', '.join(sorted(PRESETS))}")
    if kind == "union_tag_invalid":
        tag, expected = str(ctx.get("tag")), QUOTED.findall(str(ctx.get("expected_tags", "")))
        return f"unknown {path[-1]} {tag!r}" + (did_you_mean(tag, expected) or f"; one of: {', '.join(expected)}")
    allowed = None
    if kind == "extra_forbidden":
        _, parent = schema_walk(tuple(error["loc"])[:-1], root)
        allowed = model_keys(parent)
    return pydantic_message(error, allowed)


# ---- walking the schema along an error location ----------------------------------


def _strip(annotation: Any) -> Any:
    """Without ``Annotated[...]`` and without ``| None``."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _strip(members[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def model_keys(annotation: Any) -> list[str] | None:
    stripped = _strip(annotation)
    return list(stripped.model_fields) if _is_model(stripped) else None


def _tagged(member: type[BaseModel], tag: object) -> bool:
    if member.__name__ == tag:
        return True
    return any(get_origin(f.annotation) is Literal and tag in get_args(f.annotation)
               for f in member.model_fields.values())


def _child(annotation: Any, part: object) -> Any:
    stripped = _strip(annotation)
    if _is_model(stripped):
        found = stripped.model_fields.get(str(part))
        return found.annotation if found is not None else None
    args = get_args(stripped)
    if get_origin(stripped) is dict and len(args) == 2:
        return args[1]
    if get_origin(stripped) is list and args:
        return args[0]
    return None


def schema_walk(loc: tuple[Any, ...], root: type[BaseModel] = CorralConfig) -> tuple[KeyPath, Any]:
    """The user's key path for a pydantic error location (union member tags removed) and
    the schema type found at its end."""
    annotation: Any = root
    path: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and _UNION_TAG.match(part):
            continue
        stripped = _strip(annotation)
        if get_origin(stripped) in (Union, UnionType):
            chosen = next((m for m in get_args(stripped) if _is_model(m) and _tagged(m, part)), None)
            if chosen is not None:
                annotation = chosen
                continue
        path.append(part)
        annotation = _child(annotation, part)
    return tuple(path), annotation
