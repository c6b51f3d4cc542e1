"""The target ladder: rungs between a suite's initial metric and its frozen target.

A CPU board where most runs miss the final target still has something to say about how far and
how fast each method gets. Every suite with a target and a calibrated initial value has rungs at
fixed fractions of the way from the initial validation metric to the target (:data:`FRACTIONS`);
the top rung is the target itself, so the official score is the top rung's.

"The way" is measured linearly, except for a ``min`` metric that the target asks to shrink by
more than :data:`LOG_SPAN` times (Rosenbrock's loss goes from 200 to 1e-8): there the rungs are
geometric, so that the 50 % rung is halfway in orders of magnitude rather than a loss halved.

The initial value is part of the suite's calibration evidence (the median over the calibration
seeds of the metric at step 0, before any update), never a per-run quantity: every run climbs
the same ladder.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

#: Fractions of the way from the initial metric to the target; the last is the target.
FRACTIONS: tuple[float, ...] = (0.5, 0.8, 0.95, 1.0)
#: A ``min`` target this many times below a positive initial value gets geometric rungs.
LOG_SPAN = 10.0


@dataclass(frozen=True)
class Rung:
    """One rung: ``fraction`` of the way to the target, at metric ``value``."""

    fraction: float
    value: float
    mode: Literal["max", "min"]

    def reached(self, metric: float) -> bool:
        if not math.isfinite(metric):
            return False
        return metric >= self.value if self.mode == "max" else metric <= self.value

    @property
    def label(self) -> str:
        return f"{round(100 * self.fraction)}%"


def ladder_scale(initial: float, target: float, mode: str) -> Literal["linear", "log"]:
    if mode == "min" and initial > 0 and target > 0 and initial / target > LOG_SPAN:
        return "log"
    return "linear"


def ladder(
    initial: float, target: float, mode: Literal["max", "min"], fractions: tuple[float, ...] = FRACTIONS
) -> tuple[Rung, ...]:
    """Rungs at ``fractions`` of the way from ``initial`` to ``target`` (see the module docstring).

    The fractions must be increasing in (0, 1] and end at 1, and ``initial`` must lie on the far
    side of the target (below it for ``max``, above it for ``min``): a suite whose target holds
    at initialisation has no ladder.
    """
    if not fractions or fractions[-1] != 1.0 or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"ladder fractions must lie in (0, 1] and end at 1, got {fractions}")
    if any(b <= a for a, b in itertools.pairwise(fractions)):
        raise ValueError(f"ladder fractions must increase, got {fractions}")
    if not (initial < target if mode == "max" else initial > target):
        raise ValueError(f"the initial value {initial:g} already meets the target {target:g} ({mode})")
    rungs = []
    log = ladder_scale(initial, target, mode) == "log"
    for f in fractions:
        if f == 1.0:
            value = target
        elif log:
            value = math.exp(math.log(initial) + f * (math.log(target) - math.log(initial)))
        else:
            value = initial + f * (target - initial)
        rungs.append(Rung(f, value, mode))
    return tuple(rungs)
