"""Keep docs/operations.md true to the code."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from corral.boot.manager import BootReport, Outcome, ServiceOutcome
from corral.boot.specs import _OVERRIDE_FIELDS, ServiceSpec

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


def test_every_svc_override_is_documented_and_no_other() -> None:
    documented = set(re.findall(r"`SVC_<NAME>_([A-Z_]+)`", DOC))
    assert documented == set(_OVERRIDE_FIELDS)


def test_documented_summary_has_the_real_shape() -> None:
    example = json.loads(re.search(r"```json\n(.*?)\n```", DOC, re.S).group(1))  # type: ignore[union-attr]
    spec = ServiceSpec(name="redis", type="redis", health_kind="redis", port=6379)
    report = BootReport(strict=True, started_at=datetime.now(UTC), outcomes=[ServiceOutcome(spec, Outcome.ALREADY_RUNNING, "PONG")])
    real = report.to_dict()
    assert set(example) == set(real)
    assert set(example["counts"]) == set(real["counts"])
    assert all(set(service) == set(real["services"][0]) for service in example["services"])
