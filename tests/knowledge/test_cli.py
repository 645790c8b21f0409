"""`corral knowledge ...` through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from corral.cli.main import build_app

from .conftest import write


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(build_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def test_ingest_query_stats_and_drop(tmp_path: Path) -> None:
    write(tmp_path, {"docs/a.md": "# Keys\n\nRotate a virtual key with the admin API.\n",
                     "docs/b.md": "# Spend\n\nSpend is grouped by key, model or day.\n",
                     "docs/logo.bin": b"\x00\x01binary"})
    config = tmp_path / "corral.yaml"
    config.write_text("knowledge:\n  docs:\n    sources: [docs]\n    exclude: ['*.bin']\n"
                      "    embedder: {type: offline, dimensions: 64}\n  plain:\n    sources: [docs]\n")
    code, out, _ = _invoke("knowledge", "ingest", "docs", "--config", str(config), "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["added"], report["chunks_written"], report["chunks_embedded"], report["pending"]) == (2, 2, 2, 0)

    code, out, _ = _invoke("knowledge", "ingest", "plain", "--config", str(config))
    assert code == 0 and "2 added" in out
    assert "skipped docs/logo.bin: unsupported file type '.bin'" in out

    code, out, _ = _invoke("knowledge", "query", "docs", "rotate a key", "--config", str(config), "--json", "-k", "1")
    assert code == 0
    (hit,) = json.loads(out)["results"]
    assert hit["source"] == "docs/a.md" and hit["metadata"]["heading"] == "Keys"
    code, out, _ = _invoke("knowledge", "query", "docs", "grouped", "--filter", "source=docs/b.md",
                           "--mode", "keyword", "--config", str(config))
    assert code == 0 and out.startswith("1. docs/b.md (Spend)")

    code, out, _ = _invoke("knowledge", "stats", "--config", str(config), "--json")
    bases = {b["name"]: b for b in json.loads(out)["bases"]}
    assert (bases["docs"]["vectors"], bases["docs"]["search"], bases["docs"]["embedder"]) == \
        (2, "hybrid", "offline-hash-v2/64")
    assert (bases["plain"]["vectors"], bases["plain"]["search"], bases["plain"]["chunks"]) == (None, "keyword", 2)

    code, out, _ = _invoke("knowledge", "drop", "docs", "--yes", "--config", str(config))
    assert code == 0 and out.strip() == "dropped docs"
    code, out, _ = _invoke("knowledge", "stats", "--config", str(config), "--json")
    assert {b["name"]: b["chunks"] for b in json.loads(out)["bases"]} == {"docs": 0, "plain": 2}


def test_unknown_base_exits_2_naming_the_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "corral.yaml"
    config.write_text("knowledge:\n  docs: {sources: [docs]}\n")
    code, _, err = _invoke("knowledge", "query", "doc", "x", "--config", str(config))
    assert code == 2 and "unknown knowledge base 'doc' (did you mean 'docs'?) (known: docs)" in err
