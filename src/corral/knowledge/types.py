"""What flows through a knowledge base: documents, chunks, hits, filters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MetaValue = str | int | float | bool
Metadata = dict[str, MetaValue]
# {"key": value} or {"key": [v1, v2]} (any of); every key must match.
Filter = dict[str, MetaValue | list[MetaValue]]
Kind = Literal["markdown", "code", "text", "html", "pdf"]

# Words too common to say what a query is about; left out of keyword queries and of the
# offline embedder's word features (the index itself keeps every word).
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how", "i", "if",
    "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "so", "that", "the", "their", "then",
    "there", "these", "this", "to", "was", "we", "what", "when", "where", "which", "who", "why", "will",
    "with", "you", "your"
})


@dataclass(slots=True)
class Document:
    source: str  # the path relative to the base's root, or the id given through the API
    text: str
    kind: Kind
    digest: str  # sha256 of the raw bytes (or of the text for documents added through the API)
    metadata: Metadata = field(default_factory=dict)


@dataclass(slots=True)
class Skipped:
    source: str
    reason: str


@dataclass(slots=True)
class Chunk:
    text: str
    metadata: Metadata = field(default_factory=dict)


@dataclass(slots=True)
class Hit:
    """One search result: a passage and where it came from."""

    id: int
    text: str
    source: str
    score: float
    metadata: Metadata = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"text": self.text, "source": self.source, "score": round(self.score, 6),
                "metadata": self.metadata}


class KnowledgeError(Exception):
    """A problem a user fixes (bad filter, unknown base, mismatched dimensions)."""


class UnknownBase(KnowledgeError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        choices = ", ".join(sorted(known)) or "none are configured"
        super().__init__(f"unknown knowledge base {name!r} (known: {choices})")


def check_filter(value: object) -> Filter:
    """A filter from JSON, or `KnowledgeError` naming what is wrong."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise KnowledgeError("filter must be an object of metadata key -> value (or list of values)")
    out: Filter = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise KnowledgeError(f"filter key {key!r} must be letters, digits, '_', '-' or '.'")
        if isinstance(item, list):
            if not item or not all(_scalar(v) for v in item):
                raise KnowledgeError(f"filter {key!r}: a list must hold strings, numbers or booleans")
            out[key] = list(item)
        elif _scalar(item):
            out[key] = item
        else:
            raise KnowledgeError(f"filter {key!r}: value must be a string, number, boolean or a list of them")
    return out


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def matches(metadata: Metadata, flt: Filter) -> bool:
    for key, wanted in flt.items():
        have = metadata.get(key)
        if isinstance(wanted, list):
            if have not in wanted:
                return False
        elif have != wanted:
            return False
    return True
