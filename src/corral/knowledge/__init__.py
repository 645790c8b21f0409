"""Knowledge bases for retrieval-augmented agents: loaders, chunkers, embedders, vector
stores, hybrid search, and `KnowledgeService` over all of them."""

from corral.knowledge.base import BaseStats, IngestReport, KnowledgeBase, NewDocument, Progress
from corral.knowledge.embedders import Embedder, EmbedderUnavailable, OfflineEmbedder, RouterEmbedder
from corral.knowledge.service import KnowledgeService
from corral.knowledge.stores import DimensionMismatch, VectorStore, build_store
from corral.knowledge.types import Filter, Hit, KnowledgeError, UnknownBase

__all__ = [
    "BaseStats",
    "DimensionMismatch",
    "Embedder",
    "EmbedderUnavailable",
    "Filter",
    "Hit",
    "IngestReport",
    "KnowledgeBase",
    "KnowledgeError",
    "KnowledgeService",
    "NewDocument",
    "OfflineEmbedder",
    "Progress",
    "RouterEmbedder",
    "UnknownBase",
    "VectorStore",
    "build_store",
]
