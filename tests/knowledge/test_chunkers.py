from __future__ import annotations

import itertools

from corral.config.knowledge import ChunkingConfig
from corral.knowledge.chunkers import chunk, split_text
from corral.knowledge.types import Document

MARKDOWN = """# Guide

Intro paragraph.

## Install

Run `pip install corral`.

```sh
# not a heading inside a fence
corral up
```

### Docker

Use the compose file.

## Usage

Call the API.
"""

CODE = '''"""Module docstring."""
import os


def alpha(x):
    return x + 1


# Beta does the second thing.
@decorated
class Beta:
    def method(self):
        return os.sep


async def gamma():
    pass
'''


def test_markdown_is_cut_by_heading_and_each_chunk_knows_its_heading_path() -> None:
    chunks = chunk(Document("guide.md", MARKDOWN, "markdown", "h"), ChunkingConfig())
    headings = [c.metadata.get("heading") for c in chunks]
    assert headings == ["Guide", "Guide > Install", "Guide > Install > Docker", "Guide > Usage"]
    assert "# not a heading inside a fence" in chunks[1].text  # fences are not cut
    assert chunks[2].text.startswith("### Docker") and "compose file" in chunks[2].text
    assert [c.metadata["chunk"] for c in chunks] == [0, 1, 2, 3]
    assert all(c.metadata["source"] == "guide.md" and c.metadata["kind"] == "markdown" for c in chunks)


def test_code_is_cut_by_top_level_definition_with_its_comments_and_decorators() -> None:
    chunks = chunk(Document("m.py", CODE, "code", "h"), ChunkingConfig(size=100, overlap=10))
    by_symbol = {c.metadata.get("symbols"): c.text for c in chunks}
    assert set(by_symbol) == {"alpha", "Beta", "gamma"}  # the small preamble is packed with alpha
    assert by_symbol["Beta"].startswith("# Beta does the second thing.\n@decorated\nclass Beta:")
    assert "def method" in by_symbol["Beta"]
    assert by_symbol["alpha"].startswith('"""Module docstring."""\nimport os\n\ndef alpha(x):')


def test_small_definitions_are_packed_together_up_to_the_size() -> None:
    chunks = chunk(Document("m.py", CODE, "code", "h"), ChunkingConfig(size=1000, overlap=10))
    assert len(chunks) == 1 and chunks[0].metadata["symbols"] == "alpha, Beta, gamma"


def test_size_split_respects_size_overlaps_and_cuts_between_words() -> None:
    words = " ".join(f"word{i}" for i in range(400))
    pieces = split_text(words, 200, 40)
    assert len(pieces) > 10 and all(len(p) <= 200 for p in pieces)
    for before, after in itertools.pairwise(pieces):
        assert after.split()[0] in before.split()  # the overlap repeats the tail of the previous piece
    assert all(p.split()[0].startswith("word") for p in pieces)  # never starts mid-word
    rebuilt = {w for p in pieces for w in p.split()}
    assert rebuilt == set(words.split())


def test_long_markdown_section_pieces_repeat_the_heading() -> None:
    body = "\n\n".join(f"Paragraph {i} " + "text " * 40 for i in range(10))
    chunks = chunk(Document("a.md", f"# Top\n\n## Long\n\n{body}", "markdown", "h"), ChunkingConfig(size=400, overlap=50))
    assert len(chunks) > 3 and all(len(c.text) <= 400 for c in chunks)
    assert all(c.text.startswith(("Top > Long", "## Long")) for c in chunks)
