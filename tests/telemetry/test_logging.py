"""`OutageLog`: one warning per outage of a backing service, one line when it is back."""

from __future__ import annotations


def test_an_outage_is_warned_once_and_its_end_said_once(caplog) -> None:
    import logging

    from corral.telemetry.logging import OutageLog

    log = logging.getLogger("corral.test.outage")
    outage = OutageLog(log)
    with caplog.at_level(logging.DEBUG, logger="corral.test.outage"):
        outage.up("back")  # never down: nothing to say
        outage.down("redis down")
        outage.down("redis still down")
        outage.up("back")
        outage.up("back")
        outage.down("down again")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "redis down"), ("DEBUG", "redis still down"), ("INFO", "back"), ("WARNING", "down again")]
