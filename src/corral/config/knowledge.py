"""The `knowledge:` section: named knowledge bases for retrieval (`corral.knowledge`).

A base reads its ``sources`` (files, directories, globs; relative to the config file),
cuts them into chunks, embeds them with ``embedder`` (a model alias served by the
router, the deterministic ``offline`` embedder, or none: keyword search only) and keeps
the vectors in ``store``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EmbedderConfig(_Strict):
    type: Literal["model", "offline"] = "model"
    model: str | None = None  # a model alias from `models:` that serves embeddings
    dimensions: int | None = Field(default=None, ge=8, le=8192)  # offline: default 256
    batch_size: int = Field(default=64, ge=1, le=2048)  # texts per embeddings call
    retries: int = Field(default=3, ge=0)  # per batch, with exponential backoff
    backoff: float = Field(default=0.5, ge=0)  # seconds before the first retry

    @model_validator(mode="after")
    def _model_named(self) -> EmbedderConfig:
        if self.type == "model" and not self.model:
            raise ValueError("an embedder of type 'model' needs a model (an alias from `models:`)")
        if self.type == "offline" and self.model:
            raise ValueError("the offline embedder takes no model")
        return self


class StoreConfig(_Strict):
    type: Literal["embedded", "chroma", "qdrant", "pgvector"] = "embedded"
    url: str | None = None  # chroma/qdrant: http(s)://host:port; pgvector: postgresql://...
    path: str | None = None  # qdrant local mode (a directory); embedded: overrides <data dir>/knowledge/<name>
    collection: str | None = None  # default: corral_<base name>
    api_key: SecretStr | None = None  # qdrant/chroma servers that require one

    @model_validator(mode="after")
    def _endpoint(self) -> StoreConfig:
        if self.type == "chroma" and not self.url:
            raise ValueError("a chroma store needs the url of a Chroma server (chroma run)")
        if self.type == "pgvector" and not self.url:
            raise ValueError("a pgvector store needs a postgresql:// url")
        if self.type == "qdrant" and not (self.url or self.path):
            raise ValueError("a qdrant store needs a url (server) or a path (local mode)")
        return self


class ChunkingConfig(_Strict):
    size: int = Field(default=1200, ge=100, le=100_000)  # characters per chunk at most (about 300 tokens)
    overlap: int = Field(default=150, ge=0)  # characters repeated between size-cut chunks

    @model_validator(mode="after")
    def _overlap_fits(self) -> ChunkingConfig:
        if self.overlap >= self.size:
            raise ValueError("overlap must be smaller than size")
        return self


class SearchConfig(_Strict):
    mode: Literal["hybrid", "keyword", "vector"] = "hybrid"  # without an embedder: keyword
    top_k: int = Field(default=5, ge=1, le=100)
    score_threshold: float | None = None  # drop results scoring below (the score of the mode used)
    rerank: str | None = None  # a chat model alias that reorders the candidates


class KnowledgeBaseConfig(_Strict):
    description: str = ""
    sources: list[str] = Field(default_factory=list)  # files, directories, globs (** allowed)
    exclude: list[str] = Field(default_factory=list)  # globs matched against the relative path
    max_file_bytes: int = Field(default=20_000_000, ge=1)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    embedder: EmbedderConfig | None = None  # None: keyword search only
    store: StoreConfig = Field(default_factory=StoreConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)


KnowledgeSection = dict[str, KnowledgeBaseConfig]
