"""The fleet's alert routes: the senders live in `corral.telemetry.alerts`, shared with
the gateway's budget alerts."""

from corral.telemetry.alerts import Alerter, body_for

__all__ = ["Alerter", "body_for"]
