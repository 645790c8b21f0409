"""docs/providers.md stays true: its presets table matches the code and its example runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from corral.config.presets import PRESETS

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def test_presets_table_matches_the_presets() -> None:
    text = DOC.read_text()
    table = text.split("<!-- provider-presets -->")[1].split("<!-- /provider-presets -->")[0]
    rows = [line for line in table.strip().splitlines()[2:] if line.startswith("|")]
    documented = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name, wire, url, key = cells
        documented[name.strip("`")] = (
            wire,
            None if url.startswith("—") else url.strip("`"),
            None if key == "—" else key.strip("`"),
        )
    assert documented == {p.name: (p.wire, p.base_url, p.key_env) for p in PRESETS.values()}


async def test_fake_upstream_example_runs() -> None:
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    await namespace["test_my_agent"]()
