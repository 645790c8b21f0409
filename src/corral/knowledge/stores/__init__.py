"""Vector stores behind one protocol (`VectorStore`)."""

from __future__ import annotations

from pathlib import Path

from corral.config.knowledge import StoreConfig
from corral.knowledge.stores.base import DimensionMismatch, VectorStore
from corral.knowledge.stores.embedded import EmbeddedStore
from corral.knowledge.types import KnowledgeError


def build_store(name: str, config: StoreConfig, directory: Path) -> VectorStore:
    """``directory``: the base's own folder in the data dir (embedded store, qdrant's default path)."""
    collection = config.collection or f"corral_{name}".replace("-", "_")
    api_key = config.api_key.get_secret_value() if config.api_key else None
    if config.type == "embedded":
        folder = Path(config.path).expanduser() if config.path else directory
        return EmbeddedStore(folder / "vectors.db")
    if config.type == "qdrant":
        try:
            from corral.knowledge.stores.qdrant import QdrantStore
        except ImportError:
            raise KnowledgeError(f"knowledge.{name}.store: Qdrant needs the qdrant-client package "
                                 "(pip install 'corral[qdrant]')") from None

        return QdrantStore(collection, url=config.url, path=config.path, api_key=api_key)
    if config.type == "chroma":
        from corral.knowledge.stores.chroma import ChromaStore

        assert config.url
        return ChromaStore(collection, config.url, api_key=api_key)
    from corral.knowledge.stores.pgvector import PgvectorStore

    assert config.url
    return PgvectorStore(collection, config.url)


__all__ = ["DimensionMismatch", "EmbeddedStore", "VectorStore", "build_store"]
