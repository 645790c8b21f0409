"""`corral.process.settle_after_startup`, in a process of its own (it is process-wide)."""

from __future__ import annotations

import subprocess
import sys


def test_settling_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    code = (
        "import gc, json, corral.gateway.app\n"
        "from corral.process import settle_after_startup, GEN0_THRESHOLD\n"
        "before = gc.get_freeze_count()\n"
        "settle_after_startup()\n"
        "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold()[0], GEN0_THRESHOLD]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    before, after, threshold, expected = __import__("json").loads(out.stdout)
    assert before == 0
    assert after > 10_000  # the imported gateway's objects: out of the collector's sight
    assert threshold == expected == 50_000


def test_a_threshold_of_zero_leaves_the_collector_alone() -> None:
    code = (
        "import gc, json\n"
        "from corral.process import settle_after_startup\n"
        "before = gc.get_threshold()\n"
        "settle_after_startup(0)\n"
        "print(json.dumps([gc.get_freeze_count(), gc.get_threshold() == before]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert __import__("json").loads(out.stdout) == [0, True]
