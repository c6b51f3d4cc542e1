"""What several page models share: status words, ratio classes, display order."""

from __future__ import annotations

import math
from collections.abc import Mapping

from db.statuses import FAILED_STATUSES
from leaderboard.data import SiteData

#: Short status words used in cells ("diverged 2/3").
STATUS_WORDS: Mapping[str, str] = {
    "done": "done",
    "target_reached": "reached",
    "budget_exhausted": "missed",
    "diverged": "diverged",
    "oom": "OOM",
    "timeout": "timeout",
    "error": "error",
    "crashed": "crashed",
    "interrupted": "interrupted",
}
#: Ratio buckets of the matrix colours: (upper bound, CSS class).
RATIO_BUCKETS: tuple[tuple[float, str], ...] = ((1.0, "best"), (1.25, "r2"), (2.0, "r3"), (4.0, "r4"))


def ratio_class(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "miss"
    for bound, css in RATIO_BUCKETS:
        if ratio <= bound + 1e-12:
            return css
    return "r5"


def status_text(counts: Mapping[str, int], seeds: int) -> str:
    """``3/3 reached`` or the failures and misses, e.g. ``diverged 2/3 · missed 1/3``."""
    total = sum(counts.values()) or seeds
    if counts.get("target_reached", 0) == total:
        return f"{total}/{total} reached"
    parts = [f"{STATUS_WORDS.get(s, s)} {n}/{total}" for s, n in counts.items() if s != "target_reached" and n]
    reached = counts.get("target_reached", 0)
    if reached:
        parts.insert(0, f"reached {reached}/{total}")
    return " · ".join(parts)


def has_failure(counts: Mapping[str, int]) -> bool:
    return any(counts.get(s, 0) for s in FAILED_STATUSES)


def optimizer_order(data: SiteData) -> list[str]:
    """Method-card order first (the CLI passes built-ins in display order), then by name."""
    present = set(data.runs["optimizer"]) if len(data.runs) else set()
    present |= set(data.approx["method"]) if len(data.approx) else set()
    ordered = [m for m in data.methods if m in present]
    return ordered + sorted(present - set(ordered), key=str)


def scorable_suites(data: SiteData) -> list[str]:
    return [name for name, info in data.suites.items() if info.target_metric]
