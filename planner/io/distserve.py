"""DistServe's published profiles (``profiler-*.json`` and ``max_num_tokens.csv``) as replay step times."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from planner.replay.steptimes import FittedStepTimes


def load_distserve(profile_json: Path, max_tokens_csv: Path, model: str) -> FittedStepTimes:
    """Read DistServe's fitted latency coefficients and KV-token capacities for one model."""
    profile = json.loads(profile_json.read_text(encoding="utf-8"))
    with max_tokens_csv.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return FittedStepTimes.from_distserve(profile, rows, model)
