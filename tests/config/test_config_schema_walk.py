"""Error locations inside tagged unions map back to the keys the user wrote."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.config.loader import model_keys, schema_walk


class _Files(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["files"]
    root: str


class _Shell(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["shell"]
    allow: list[str] = Field(default_factory=list)


class _Root(BaseModel):
    tools: dict[str, Annotated[_Files | _Shell, Field(discriminator="type")]] = Field(default_factory=dict)
    maybe: _Files | None = None


def _locs(data: dict[str, object]) -> list[tuple[object, ...]]:
    with pytest.raises(ValidationError) as info:
        _Root.model_validate(data)
    return [tuple(e["loc"]) for e in info.value.errors()]


def test_union_member_tags_are_removed_and_the_member_fields_are_known() -> None:
    (loc,) = _locs({"tools": {"fs": {"type": "files", "root": "/", "rooot": 1}}})
    assert loc == ("tools", "fs", "files", "rooot")
    path, _ = schema_walk(loc, _Root)
    assert path == ("tools", "fs", "rooot")
    _, parent = schema_walk(loc[:-1], _Root)
    assert model_keys(parent) == ["type", "root"]


def test_optional_models_and_lists_are_walked_through() -> None:
    path, annotation = schema_walk(("maybe", "root"), _Root)
    assert path == ("maybe", "root") and annotation is str
    _, shell = schema_walk(("tools", "x", "shell", "allow", 3), _Root)
    assert shell is str
