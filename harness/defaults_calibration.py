"""Default hyperparameters calibrated on held-out suites (``ngbench calibrate-defaults``).

A default that is neither the paper's nor a reference library's is chosen here, on the suites of
size ``heldout`` (``suites/heldout.py``), which no board, quickstart or nightly sweep runs, so
the untuned track is never tuned on its own test set (docs/defaults.md). The procedure:

1. every value ``v`` of the grid of one hyperparameter is run with the method's other defaults
   (plus any ``fixed`` overrides, recorded in the evidence) on every held-out suite, with
   seeds ``0 .. seeds-1``, for ``steps`` steps, without stopping early;
2. per suite and value, the median over seeds of the best validation metric reached (a run
   that diverges or fails, or produces no finite metric, counts as the worst possible);
3. per suite, the values are ranked by that median (1 = best; equal medians share the mean
   rank); the chosen value has the best **median rank across the suites**; ties go to the
   better mean rank, then to the value listed first in the grid.

The command prints the ``HeldOutEvidence(...)`` to freeze beside the default in the method card
(``hparam(..., provenance="held-out", source=EVIDENCE)``) and its one-line description. Runs are
executed in-process by the ordinary run loop (``harness.runner.execute``), as benchmark runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backends.spec import HeldOutEvidence, hparams_dict
from harness import registry
from harness.errors import ConfigError
from harness.progress import OK_STATUSES
from harness.runner import RunResult, RunSpec, execute, metric_mode
from suites import get_suite, list_suites
from suites.spec import SCORED_SIZES

#: Step-budget runs: no wall-clock budget cuts calibration runs short.
NO_TIME_BUDGET = 1e18
DEFAULT_SEEDS = 2
#: The reduced step budget of calibration runs (every held-out suite's own budget).
DEFAULT_STEPS = 200


def heldout_suites() -> list[str]:
    """Names of the held-out calibration suites (size ``heldout``)."""
    return [s.name for s in list_suites("heldout")]


def median_best(runs: Sequence[RunResult], mode: str) -> float:
    """Median over seeds of the best validation metric; a run that diverged or failed, or has no
    finite metric, counts as the worst possible (its best before diverging does not count)."""
    worst = math.inf if mode == "min" else -math.inf
    values = [r.best_val_metric if r.status in OK_STATUSES else None for r in runs]
    return float(statistics.median([v if v is not None and math.isfinite(v) else worst for v in values]))


def ranks(values: Sequence[float], mode: str) -> list[float]:
    """Rank of each value (1 = best under ``mode``); equal values share their mean rank."""
    key = [v if mode == "min" else -v for v in values]
    order = sorted(range(len(key)), key=lambda i: key[i])
    out = [0.0] * len(key)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and key[order[j + 1]] == key[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def choose(medians: Sequence[Sequence[float]], modes: Sequence[str]) -> int:
    """Index of the grid value with the best median rank across suites (module docstring, step 3)."""
    per_suite = [ranks(row, mode) for row, mode in zip(medians, modes, strict=True)]
    n = len(per_suite[0])
    score = [
        (statistics.median(r[j] for r in per_suite), statistics.fmean(r[j] for r in per_suite), j) for j in range(n)
    ]
    return min(score)[2]


@dataclass
class DefaultsCalibration:
    """The evidence of one calibration: every run, and the per-suite medians."""

    evidence: HeldOutEvidence
    runs: dict[tuple[str, float], list[RunResult]]
    modes: tuple[str, ...]

    def table(self) -> list[str]:
        ev = self.evidence
        lines = []
        for suite, row, mode in zip(ev.suites, ev.medians, self.modes, strict=True):
            r = ranks(row, mode)
            cells = ", ".join(f"{v:g}: {m:.4g} (rank {k:g})" for v, m, k in zip(ev.grid, row, r, strict=True))
            lines.append(f"{suite} (best val, {mode}): {cells}")
        return lines


def calibrate_default(
    method: str,
    hparam: str,
    grid: Sequence[float],
    *,
    suites: Sequence[str] | None = None,
    seeds: int = DEFAULT_SEEDS,
    steps: int = DEFAULT_STEPS,
    fixed: dict[str, Any] | None = None,
    backend: str = "torch",
    dtype: str = "float32",
    on_run: Callable[[str, float, int, RunResult], None] | None = None,
) -> DefaultsCalibration:
    """Run the grid on the held-out suites and choose the default (module docstring)."""
    names = list(suites) if suites else heldout_suites()
    if not names:
        raise ConfigError("no held-out suites are registered (size 'heldout')")
    for name in names:
        suite = get_suite(name)
        if suite.size in SCORED_SIZES:
            raise ConfigError(
                f"suite {name!r} is on a board (size {suite.size!r}); defaults are calibrated on held-out suites only"
            )
    if not grid:
        raise ConfigError("--grid needs at least one value")
    if seeds < 1:
        raise ConfigError("calibration needs at least one seed")
    base = dict(fixed or {})
    if hparam in base:
        raise ConfigError(f"{hparam!r} is the calibrated hyperparameter; it cannot also be fixed")
    # Validate the whole grid up front (a bad name or value is a user error, not a failed run)
    # and record the fixed values typed as the card declares them.
    adapter = registry.get_adapter(method, backend)
    for value in grid:
        resolved = hparams_dict(adapter.resolve({**base, hparam: value}))  # type: ignore[attr-defined]
    base = {k: resolved[k] for k in base}
    runs: dict[tuple[str, float], list[RunResult]] = {}
    if steps < 1:
        raise ConfigError("--steps must be at least 1")
    medians, modes = [], []
    for name in names:
        suite = get_suite(name)
        mode = metric_mode(suite.val_metric, suite)
        row = []
        for value in grid:
            cell = []
            for seed in range(seeds):
                spec = RunSpec(
                    suite=name,
                    optimizer=method,
                    backend=backend,
                    seed=seed,
                    steps=steps,
                    hparams={**base, hparam: value},
                    device="cpu",
                    dtype=dtype,
                    time_budget_s=NO_TIME_BUDGET,
                    stop_at_target=False,
                    tag="defaults-calibration",
                )
                result = execute(spec)
                cell.append(result)
                if on_run is not None:
                    on_run(name, value, seed, result)
            runs[(name, value)] = cell
            row.append(round(median_best(cell, mode), 6))
        medians.append(tuple(row))
        modes.append(mode)
    chosen = grid[choose(medians, modes)]
    evidence = HeldOutEvidence(
        method=method,
        hparam=hparam,
        grid=tuple(float(v) for v in grid),
        suites=tuple(names),
        medians=tuple(medians),
        seeds=seeds,
        steps=steps,
        chosen=float(chosen),
        backend=backend,
        dtype=dtype,
        fixed=tuple(sorted(base.items())),
    )
    return DefaultsCalibration(evidence, runs, tuple(modes))
