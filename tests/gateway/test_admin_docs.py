"""The auth, limits and store docs stay true: their YAML loads and the routes they list exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.gateway.conftest import scripted_config

from corral.config.loader import load_config
from corral.gateway.app import create_app

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["auth.md", "limits.md", "store.md"]


def _blocks() -> list[tuple[str, str]]:
    return [(page, block) for page in PAGES
            for block in re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)]


@pytest.mark.parametrize(("page", "block"), _blocks(), ids=lambda v: v if v.endswith(".md") else "")
def test_yaml_examples_load(page: str, block: str, tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(block)
    env = {name: "value" for name in re.findall(r"\$\{([A-Z_]+)", block)}
    assert load_config(path, env=env).config.version == 1


def test_every_admin_route_in_auth_md_exists() -> None:
    documented = set(re.findall(r"^\| `(?:[A-Z]+ )?(/admin[^`\[? ]*)", (DOCS / "auth.md").read_text(), re.MULTILINE))
    app = create_app(scripted_config(auth={"master_key": "sk-master-docs-0123456789"}), providers={})
    paths = {getattr(route, "path", "").replace("{key_id}", "{id}") for route in app.routes}
    assert documented and documented <= paths, documented - paths
