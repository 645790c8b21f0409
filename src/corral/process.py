"""Process-wide settings for Corral's long-running servers (`corral serve`, `corral
supervisor`), applied once start-up is over.

Python's cyclic garbage collector walks every tracked object of a generation when it
runs; after start-up a server holds a few hundred thousand long-lived objects
(modules, pydantic and SQLAlchemy metadata, the app) that every full collection
walks again, and that showed as pauses in the gateway's p99 and as a tenth of the
fleet supervisor's CPU. `gc.freeze()` moves everything alive at the end of start-up
out of the collector's sight (the technique CPython documents for this), and a
higher first-generation threshold lets request garbage, which reference counting
frees anyway, trigger collections less often.

The trade is memory: garbage in reference cycles lives longer. The gateway's request
paths left none when measured and the agent store leaves none (a test holds it at
zero), so what matters is that new hot code does not either (docs/performance.md);
`server.gc_young_threshold: 0` turns it off for `corral serve`.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)


def settle_after_startup(young_threshold: int = GEN0_THRESHOLD) -> None:
    """`young_threshold` 0 leaves the collector as Python set it (`server.gc_young_threshold`)."""
    if young_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(young_threshold, gen1, gen2)
