"""What a claim is: the typed contract of the claims registry.

A claim is data, versioned like a suite: an id, the paper and the exact place it is made, the
statement in one sentence, the experiment that tests it and the decision rule, written before
any data exists. Changing the experiment or the rule bumps ``version``; verdicts computed under
an older version are shown as stale, never silently re-used.

Verdicts (:class:`Verdict`):

* ``holds``: the rule's condition is met with the board's uncertainty (intervals, significance
  over seeds);
* ``does not hold``: the opposite is met with the same confidence;
* ``inconclusive``: the runs exist but neither is established (too few seeds, overlapping
  intervals, mixed suites);
* ``not measured``: the runs the experiment needs are missing (the page gives the command).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Verdict(enum.StrEnum):
    HOLDS = "holds"
    DOES_NOT_HOLD = "does not hold"
    INCONCLUSIVE = "inconclusive"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Arm:
    """One side of a run comparison: an optimizer with fixed hyperparameters.

    ``calibrated``: use the suite's calibrated configuration (``Suite.calibration.hparams``, the
    tuned AdamW of the suite's own target grid) instead of ``hparams``; only for the calibration's
    optimizer.
    """

    label: str
    optimizer: str
    hparams: tuple[tuple[str, Any], ...] = ()
    calibrated: bool = False
    preset: str | None = None


@dataclass(frozen=True)
class RunExperiment:
    """Runs of every arm on every suite, backend and seed (the untuned protocol, full budget)."""

    suites: tuple[str, ...]
    arms: tuple[Arm, ...]
    backends: tuple[str, ...] = ("torch",)
    seeds: tuple[int, ...] = (0, 1, 2)
    dtype: str = "float32"

    @property
    def kind(self) -> str:
        return "runs"


@dataclass(frozen=True)
class ApproxExperiment:
    """The approximation track (iEF paper Sec. 6) on each suite, at each damping of ``dampings``
    shared by every method that has one."""

    suites: tuple[str, ...]
    methods: tuple[str, ...]
    dampings: tuple[float, ...]
    checkpoints: int = 3
    batches: int = 4
    backend: str = "torch"
    seed: int = 0
    dtype: str = "float32"

    @property
    def kind(self) -> str:
        return "approx"


@dataclass(frozen=True)
class Rule:
    """A decision rule: ``kind`` names a function of :mod:`leaderboard.claims.rules`, ``params``
    its arguments; ``text`` states it in words for the page."""

    kind: str
    text: str
    params: tuple[tuple[str, Any], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class Claim:
    id: str
    version: int
    paper: str
    place: str
    statement: str
    experiment: RunExperiment | ApproxExperiment
    rule: Rule
    #: What would change the verdict (more seeds, a GPU-size suite ...), for the page.
    would_change: str = ""
    #: ``ci``: runs on two CPU cores; ``gpu``: needs the nightly host.
    size: str = "ci"
    notes: tuple[str, ...] = field(default=())

    @property
    def tag(self) -> str:
        """The tag of the runs ``ngbench claims run`` stores for this claim's version."""
        return f"claim:{self.id}@v{self.version}"


@dataclass(frozen=True)
class Outcome:
    """A verdict with its evidence: one line per suite (or comparison) and a summary."""

    claim: Claim
    verdict: Verdict
    summary: str
    evidence: tuple[str, ...] = ()
    #: Machine-readable evidence: one mapping per suite or comparison.
    table: tuple[dict[str, Any], ...] = ()
    #: Hardware and date of the newest run behind the verdict.
    measured_on: str = ""
    measured_at: str = ""
    #: Verdicts stored under an older claim version (shown as stale).
    stale: bool = False
