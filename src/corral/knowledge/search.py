"""Fusing ranked lists, and the optional model rerank."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from corral.knowledge.types import Hit
from corral.llm.errors import ProviderError
from corral.llm.router import CallContext, Router
from corral.llm.types import ChatRequest, Message

RRF_K = 60  # the constant of Cormack et al.; damps the weight of the very first ranks


def reciprocal_rank_fusion(*rankings: Sequence[Hit], k: int = RRF_K) -> list[Hit]:
    """One list from several rankings of the same chunks: score = sum of 1 / (k + rank)."""
    fused: dict[int, Hit] = {}
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            fused.setdefault(hit.id, hit)
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (k + rank)
    ordered = sorted(scores, key=lambda i: (-scores[i], i))
    return [Hit(i, fused[i].text, fused[i].source, scores[i], fused[i].metadata) for i in ordered]


class ModelReranker:
    """Asks a chat model to order the candidates by relevance. A reply that cannot be
    read leaves the order as it was: rerank refines, it never loses results."""

    def __init__(self, router: Router, alias: str, *, max_chars: int = 700) -> None:
        self._router = router
        self._alias = alias
        self._max_chars = max_chars

    async def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        if len(hits) < 2:
            return list(hits)
        passages = "\n\n".join(f"[{i}] {h.text[: self._max_chars]}" for i, h in enumerate(hits))
        prompt = (f"Query: {query}\n\nPassages:\n{passages}\n\nOrder the passages from most to least relevant "
                  "to the query. Answer with a JSON array of passage numbers only, e.g. [2, 0, 1].")
        request = ChatRequest(model=self._alias, messages=[Message.text("user", prompt)], temperature=0.0)
        try:
            result = await self._router.complete(self._alias, request, CallContext(alias=self._alias))
        except ProviderError:
            return list(hits)
        return reorder(hits, result.message.text_content)


def reorder(hits: Sequence[Hit], reply: str) -> list[Hit]:
    match = re.search(r"\[[\d,\s]*\]", reply)
    try:
        order = json.loads(match.group(0)) if match else []
    except json.JSONDecodeError:
        order = []
    picked = [i for i in dict.fromkeys(order) if isinstance(i, int) and 0 <= i < len(hits)]
    rest = [i for i in range(len(hits)) if i not in picked]
    return [hits[i] for i in [*picked, *rest]]
