from __future__ import annotations

from pathlib import Path

from corral.knowledge.loaders import discover, html_text, load
from corral.knowledge.types import Document, Skipped

from .conftest import write


def _pdf(text: str) -> bytes:
    """A one-page PDF with a text layer, written by hand (pypdf reads it back)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_each_supported_kind_loads_and_bad_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    write(tmp_path, {
        "a.md": "# Title\n\nbody", "b.txt": "plain", "c.py": "def f():\n    pass\n",
        "d.html": "<html><head><style>x{}</style></head><body><h2>Part</h2><p>Hello &amp; bye</p>"
                  "<script>no()</script></body></html>",
        "e.pdf": _pdf("Corral reads PDF text"), "bin.txt": b"\x00\x01\x02binary", "latin.txt": "caf\xe9".encode("latin-1"),
        "image.png": b"\x89PNG", "broken.pdf": b"%PDF-1.4 garbage", "empty.md": "  \n",
    })
    (tmp_path / "gone.md").symlink_to(tmp_path / "missing-target.md")
    results = {}
    for path in discover(["."], tmp_path):
        source = path.relative_to(tmp_path.resolve()).as_posix() if path.exists() else path.name
        results[source] = load(path, source, max_bytes=1_000_000)
    docs = {k: v for k, v in results.items() if isinstance(v, Document)}
    skipped = {k: v.reason for k, v in results.items() if isinstance(v, Skipped)}
    assert {k: d.kind for k, d in docs.items()} == {"a.md": "markdown", "b.txt": "text", "c.py": "code",
                                                    "d.html": "html", "e.pdf": "pdf"}
    assert docs["d.html"].text == "## Part\n\nHello & bye"
    assert "Corral reads PDF text" in docs["e.pdf"].text
    assert skipped["bin.txt"] == "binary content (not UTF-8 text)"
    assert skipped["latin.txt"] == "binary content (not UTF-8 text)"
    assert skipped["image.png"] == "unsupported file type '.png'"
    assert skipped["broken.pdf"].startswith("unreadable PDF")
    assert skipped["empty.md"] == "no text"
    assert skipped["gone.md"].startswith("cannot read")


def test_discover_takes_globs_directories_and_excludes(tmp_path: Path) -> None:
    write(tmp_path, {"docs/a.md": "a", "docs/sub/b.md": "b", "docs/c.txt": "c", ".git/x.md": "x",
                     "node_modules/y.md": "y", "other/d.md": "d"})
    found = [p.relative_to(tmp_path.resolve()).as_posix()
             for p in discover(["docs/**/*.md", "other", "."], tmp_path, exclude=["docs/sub/*"])]
    assert found == ["docs/a.md", "docs/c.txt", "other/d.md"]


def test_max_file_bytes_skips_large_files(tmp_path: Path) -> None:
    write(tmp_path, {"big.txt": "x" * 2000})
    result = load(tmp_path / "big.txt", "big.txt", max_bytes=1000)
    assert isinstance(result, Skipped) and result.reason == "2000 bytes is over max_file_bytes (1000)"


def test_html_text_keeps_blocks_apart() -> None:
    assert html_text("<ul><li>one</li><li>two</li></ul><h1>T</h1>") == "one\n\ntwo\n\n# T"
