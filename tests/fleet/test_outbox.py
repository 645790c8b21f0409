from __future__ import annotations

from pathlib import Path

from corral.fleet.node.outbox import Outbox
from corral.fleet.protocol import decode


async def test_unacked_events_and_the_sequence_survive_a_restart(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    await box.open()
    for i in range(5):
        seq, _ = await box.append({"type": "usage", "data": {"i": i}})
        assert seq == i + 1
    await box.ack([1, 2, 4])
    await box.save_session("s1", {"session_id": "s1", "state": "idle"})
    await box.close()

    reopened = Outbox(tmp_path / "outbox.db")
    await reopened.open()
    assert sorted(reopened.pending) == [3, 5]
    assert [decode(f).payload["data"]["i"] for _, f in reopened.after(0)] == [2, 4]
    assert reopened.after(3) == [(5, reopened.pending[5])]
    seq, _ = await reopened.append({"type": "x"})
    assert seq == 6  # numbering continues, never reuses an acknowledged seq
    assert await reopened.load_sessions() == [{"session_id": "s1", "state": "idle"}]
    await reopened.close()
