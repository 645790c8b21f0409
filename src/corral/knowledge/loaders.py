"""Find a base's files and read them as text: Markdown, plain text, code, HTML, PDF.

A file that cannot be read (permissions, binary content, an unknown encoding, a PDF
without a text layer) is skipped with a reason instead of failing the whole ingest.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import html.parser
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from corral.knowledge.types import Document, Kind, Skipped

MARKDOWN = {".md", ".markdown", ".mdx", ".rst"}
HTML = {".html", ".htm", ".xhtml"}
CODE = {
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".kt", ".c", ".h",
    ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".sql", ".lua",
}
TEXT = {".txt", ".text", ".log", ".csv", ".tsv", ".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ""}
PDF = {".pdf"}
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".ruff_cache"}


def kind_of(path: Path) -> Kind | None:
    suffix = path.suffix.lower()
    if suffix in MARKDOWN:
        return "markdown"
    if suffix in HTML:
        return "html"
    if suffix in CODE:
        return "code"
    if suffix in PDF:
        return "pdf"
    if suffix in TEXT:
        return "text"
    return None


def discover(sources: Sequence[str], root: Path, exclude: Sequence[str] = ()) -> list[Path]:
    """Every file named by ``sources`` (files, directories walked recursively, globs),
    sorted and without duplicates; relative entries are taken from ``root``."""
    found: dict[Path, None] = {}
    for entry in sources:
        pattern = Path(entry).expanduser()
        if not pattern.is_absolute():
            pattern = root / pattern
        if any(ch in entry for ch in "*?["):
            candidates: Iterator[Path] = (Path(p) for p in glob.iglob(str(pattern), recursive=True))
        elif pattern.is_dir():
            candidates = _walk(pattern)
        else:
            candidates = iter([pattern])
        for path in candidates:
            if path.is_dir():
                for inner in _walk(path):
                    found.setdefault(inner.resolve(), None)
            else:
                found.setdefault(path.resolve() if path.exists() else path, None)
    root_resolved = root.resolve()
    return sorted(p for p in found if not _excluded(relative_source(p, root_resolved), exclude))


def _walk(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            if path.name not in SKIP_DIRS and not path.name.startswith("."):
                yield from _walk(path)
        elif path.is_file() or path.is_symlink():  # a broken link is reported, not silently lost
            yield path


def _excluded(source: str, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(source, pattern) for pattern in exclude)


def relative_source(path: Path, root: Path) -> str:
    """The path as sources name it: relative to the root ("../README.md" above it)."""
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows)
        return path.as_posix()


def load(path: Path, source: str, *, max_bytes: int) -> Document | Skipped:
    kind = kind_of(path)
    if kind is None:
        return Skipped(source, f"unsupported file type {path.suffix or '(no extension)'!r}")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return Skipped(source, f"{size} bytes is over max_file_bytes ({max_bytes})")
        raw = path.read_bytes()
    except OSError as exc:
        return Skipped(source, f"cannot read: {exc.strerror or exc}")
    digest = hashlib.sha256(raw).hexdigest()
    if kind == "pdf":
        return _pdf(raw, source, digest)
    text = decode(raw)
    if text is None:
        return Skipped(source, "binary content (not UTF-8 text)")
    if kind == "html":
        text = html_text(text)
    if not text.strip():
        return Skipped(source, "no text")
    return Document(source, text, kind, digest)


def decode(raw: bytes) -> str | None:
    """UTF-8 text (a BOM allowed), or None for binary content."""
    if b"\x00" in raw[:8192]:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


class _HtmlText(html.parser.HTMLParser):
    """Visible text of an HTML page; headings become Markdown headings so the Markdown
    chunker can cut the page by section."""

    HEADINGS = {"h1": "#", "h2": "##", "h3": "###", "h4": "####", "h5": "#####", "h6": "######"}
    BLOCKS = {"p", "div", "section", "article", "li", "br", "tr", "pre", "blockquote", "table", "ul", "ol"}
    HIDDEN = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag in self.HEADINGS:
            self.parts.append(f"\n\n{self.HEADINGS[tag]} ")
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self.HEADINGS:
            self.parts.append("\n\n")
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_text(markup: str) -> str:
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


def _pdf(raw: bytes, source: str, digest: str) -> Document | Skipped:
    from pypdf import PdfReader  # imported on the first PDF: most bases have none
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        return Skipped(source, f"unreadable PDF: {exc}")
    text = "\n\n".join(f"## Page {i}\n\n{page.strip()}" for i, page in enumerate(pages, 1) if page.strip())
    if not text:
        return Skipped(source, "PDF has no text layer (scanned pages need OCR first)")
    return Document(source, text, "pdf", digest)
