"""Cut documents into passages: Markdown by headings, code by definitions, anything
else by size with overlap. Every chunk is at most ``size`` characters; a section or a
definition longer than that is cut by size too, at a paragraph, line or word boundary."""

from __future__ import annotations

import re
from collections.abc import Iterator

from corral.config.knowledge import ChunkingConfig
from corral.knowledge.types import Chunk, Document

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# A definition that starts at column 0 in the common languages.
_DEFINITION = re.compile(
    r"^(?:(?:async\s+)?def\s|class\s|(?:export\s+)?(?:default\s+)?(?:async\s+)?function\b|"
    r"(?:export\s+)?(?:const|let|var)\s+\w+\s*=\s*(?:async\s*)?\(|(?:export\s+)?(?:interface|type|enum)\s|"
    r"func\s|(?:pub(?:\(\w+\))?\s+)?(?:fn|struct|enum|trait|impl|mod)\b|"
    r"(?:public|private|protected|static)\s)"
)
_NAME = re.compile(r"(?:def|class|function|func|fn|struct|enum|trait|impl|interface|type|const|let|var)\s+"
                   r"(?:\([^)]*\)\s*)?([A-Za-z_$][\w$]*)")


def chunk(document: Document, config: ChunkingConfig) -> list[Chunk]:
    if document.kind in ("markdown", "html", "pdf"):
        chunks = list(_markdown(document.text, config))
    elif document.kind == "code":
        chunks = list(_code(document.text, config))
    else:
        chunks = [Chunk(piece) for piece in split_text(document.text, config.size, config.overlap)]
    for index, item in enumerate(chunks):
        item.metadata = {**document.metadata, **item.metadata, "source": document.source,
                         "kind": document.kind, "chunk": index}
    return chunks


def _markdown(text: str, config: ChunkingConfig) -> Iterator[Chunk]:
    """One chunk per section; the heading path ("Install > Docker") goes in metadata and
    in front of each piece of a long section, so a piece keeps its context."""
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False

    def flush() -> Iterator[Chunk]:
        body = "\n".join(lines).strip()
        lines.clear()
        if not body:
            return
        heading = " > ".join(title for _, title in path)
        only_heading = all(_HEADING.match(line) for line in body.splitlines() if line.strip())
        if only_heading:
            return
        for index, piece in enumerate(split_text(body, config.size, config.overlap)):
            if index and heading:
                piece = f"{heading}\n\n{piece}"[: config.size]
            yield Chunk(piece, {"heading": heading} if heading else {})

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            yield from flush()
            level = len(match.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, match.group(2).strip()))
        lines.append(line)
    yield from flush()


def _code(text: str, config: ChunkingConfig) -> Iterator[Chunk]:
    """Top-level definitions, each with the decorators and comments just above it; small
    neighbours are packed together up to ``size``."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    pending: list[str] = []  # comments/decorators/blank lines that belong to the next definition
    for line in text.splitlines():
        if _DEFINITION.match(line):
            found = _NAME.search(line)
            blocks.append((found.group(1) if found else None, [*pending, line]))
            pending = []
        elif line.startswith(("@", "#", "//", "/*", " *")) or not line.strip():
            pending.append(line)
        else:
            blocks[-1][1].extend(pending)
            pending = []
            blocks[-1][1].append(line)
    blocks[-1][1].extend(pending)

    packed: list[tuple[list[str], str]] = []  # (names, text)
    names: list[str] = []
    current = ""
    for name, block_lines in blocks:
        body = "\n".join(block_lines).strip("\n")
        if not body.strip():
            continue
        if current and len(current) + len(body) + 2 > config.size:
            packed.append((names, current))
            names, current = [], ""
        current = f"{current}\n\n{body}" if current else body
        if name:
            names.append(name)
    if current:
        packed.append((names, current))
    for symbols, body in packed:
        meta = {"symbols": ", ".join(symbols)} if symbols else {}
        for piece in split_text(body, config.size, config.overlap):
            yield Chunk(piece, dict(meta))


def split_text(text: str, size: int, overlap: int) -> list[str]:
    """Pieces of at most ``size`` characters, each repeating the last ``overlap``
    characters of the one before, cut at the best boundary in the second half of the window."""
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    pieces: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            end = _boundary(text, start + size // 2, end)
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
        # Start the overlap at a word boundary so no piece begins mid-word.
        space = text.find(" ", start, end)
        if overlap and 0 <= space < end - 1:
            start = space + 1
    return pieces


def _boundary(text: str, low: int, high: int) -> int:
    for separator in ("\n\n", "\n", ". ", " "):
        cut = text.rfind(separator, low, high)
        if cut != -1:
            return cut + len(separator)
    return high
