"""Target setting: AlgoPerf's procedure in miniature (``ngbench calibrate SUITE``).

AlgoPerf (``docs/DOCUMENTATION.md``, "Defining target performance") tunes four standard
optimizers with 200 trials each, reruns the best configuration 20 times, and takes the **median
over those seeds of the best validation metric each run reached** as the validation target;
submissions then get a runtime budget **1/3 longer** than the target-setting runs. Here, per
suite version:

1. a grid of configurations of one tuned reference optimizer (AdamW by default: learning rates,
   optionally weight decays), each run with ``seeds`` seeds (default 3) for
   ``CALIBRATION_FRACTION = 3/4`` of the suite's step budget (so the budget is 1/3 longer than
   the target-setting runs), without stopping at a target;
2. per configuration, the median over seeds of the best value of the suite's validation metric
   within those steps;
3. the best configuration by that median; its median is the target, rounded to three
   significant digits towards the easier side (so the rounding never makes the target
   harder than what was measured).

The command prints the suggested ``Target(...)`` and ``Calibration(...)`` lines and the evidence
(every configuration and seed); it does not edit files: a person freezes the numbers in the
suite's file and bumps its ``version``. Runs are executed in-process by the ordinary run loop
(``harness.runner.execute``), so they are measured exactly like benchmark runs.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.runner import RunResult, RunSpec, execute, metric_mode
from suites import get_suite
from suites.spec import CALIBRATION_FRACTION, Suite

#: Learning-rate grid of the reference optimizers when none is given (half-decades).
DEFAULT_LRS: dict[str, tuple[float, ...]] = {
    "adamw": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "sgd": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
}
#: Step-budget runs: the suite's time budget does not cut target-setting runs short.
NO_TIME_BUDGET = 1e18


@dataclass
class ConfigResult:
    """One configuration of the grid across seeds."""

    hparams: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        """Best validation metric of each seed's run (NaN when the run produced none)."""
        return [r.best_val_metric if r.best_val_metric is not None else math.nan for r in self.runs]

    def median(self, mode: str) -> float:
        """Median over seeds; a run without a finite value counts as the worst possible."""
        worst = -math.inf if mode == "max" else math.inf
        return float(statistics.median([v if math.isfinite(v) else worst for v in self.values]))


@dataclass
class CalibrationReport:
    suite: Suite
    optimizer: str
    backend: str
    dtype: str
    device: str
    steps: int
    seeds: int
    grid: str
    mode: str
    configs: list[ConfigResult]

    @property
    def best(self) -> ConfigResult:
        """The configuration with the best median; ties go to the better mean over seeds."""
        sign = 1.0 if self.mode == "max" else -1.0

        def key(c: ConfigResult) -> tuple[float, float]:
            finite = [v for v in c.values if math.isfinite(v)]
            mean = statistics.fmean(finite) if len(finite) == len(c.values) else -math.inf * sign
            return sign * c.median(self.mode), sign * mean

        return max(self.configs, key=key)

    def time_budget_s(self) -> float | None:
        """AlgoPerf's runtime rule: 4/3 of the best configuration's median step-clock time over
        the calibration steps (two significant digits, rounded up)."""
        times = [r.train_time_s for r in self.best.runs if r.train_time_s > 0]
        if not times:
            return None
        return round_toward_easier(statistics.median(times) / CALIBRATION_FRACTION, "min", digits=2)

    @property
    def target_value(self) -> float:
        return round_toward_easier(self.best.median(self.mode), self.mode)

    def reached(self, run: RunResult, value: float) -> tuple[int, float] | None:
        """``(step, step-clock time)`` of the first evaluation of ``run`` at or past ``value``."""
        steps, times, values = run.series(self.suite.val_metric)
        for s, t, v in zip(steps, times, values, strict=True):
            if math.isfinite(v) and (v >= value if self.mode == "max" else v <= value):
                return int(s), float(t)
        return None

    def time_to_target_s(self) -> float | None:
        """Median step-clock time the best configuration's runs took to reach the target."""
        hits = [self.reached(r, self.target_value) for r in self.best.runs]
        times = [h[1] for h in hits if h is not None]
        return float(statistics.median(times)) if times else None

    def initial_value(self) -> float | None:
        """Median over the best configuration's seeds of the metric at step 0 (the ladder's foot)."""
        values = []
        for run in self.best.runs:
            steps, _, metric = run.series(self.suite.val_metric)
            if len(steps) and int(steps[0]) == 0 and math.isfinite(float(metric[0])):
                values.append(float(metric[0]))
        return round(float(statistics.median(values)), 6) if values else None

    def machine(self) -> str:
        env = self.best.runs[0].environment if self.best.runs else {}
        threads = env.get("env", {}).get("OMP_NUM_THREADS", "?") if isinstance(env.get("env"), dict) else "?"
        return f"{env.get('device_name') or env.get('cpu') or self.device}, OMP_NUM_THREADS={threads}"

    def budget_line(self) -> str:
        time_s = self.time_budget_s()
        return f"budget=Budget(steps={self.suite.budget.steps}, time_s={time_s!r}),"

    def target_line(self) -> str:
        return f'target=Target("{self.suite.val_metric}", {self.target_value:.3g}, mode="{self.mode}"),'

    def calibration_line(self) -> str:
        best = self.best
        hp = ", ".join(f'("{k}", {v!r})' for k, v in sorted(best.hparams.items()))
        values = ", ".join(f"{v:.6g}" for v in best.values)
        ttt = self.time_to_target_s()
        return (
            f'calibration=Calibration(optimizer="{self.optimizer}", hparams=({hp},), grid="{self.grid}", '
            f"seeds={self.seeds}, steps={self.steps}, values=({values},), "
            f'backend="{self.backend}", dtype="{self.dtype}", '
            f"time_to_target_s={(round(ttt, 2) if ttt is not None else None)!r}, machine={self.machine()!r}, "
            f"initial_value={self.initial_value()!r}),"
        )

    def table(self) -> list[list[str]]:
        """Rows: configuration, per-seed best values, median, steps to the target per seed."""
        rows = []
        for c in self.configs:
            hits = [self.reached(r, self.target_value) for r in c.runs]
            rows.append(
                [
                    ", ".join(
                        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(c.hparams.items())
                    ),
                    *(f"{v:.4g}" for v in c.values),
                    f"{c.median(self.mode):.4g}",
                    " ".join(str(h[0]) if h else "-" for h in hits),
                    " ".join(r.status for r in c.runs),
                ]
            )
        return rows


def round_toward_easier(value: float, mode: str, digits: int = 3) -> float:
    """``value`` to ``digits`` significant digits, down for a ``max`` target, up for ``min``."""
    if not math.isfinite(value) or value == 0:
        return value
    exponent = math.floor(math.log10(abs(value))) - digits + 1
    scale = 10.0**exponent
    q = value / scale
    # Guard against representation noise (0.969999999 -> 0.97, not 0.969).
    q = round(q) if abs(q - round(q)) < 1e-9 else (math.floor(q) if mode == "max" else math.ceil(q))
    return float(f"{q * scale:.{digits}g}")


def calibration_steps(suite: Suite) -> int:
    return max(1, round(CALIBRATION_FRACTION * suite.budget.steps))


def calibrate(
    suite_name: str,
    *,
    optimizer: str = "adamw",
    lrs: Sequence[float] | None = None,
    weight_decays: Sequence[float] | None = None,
    seeds: int = 3,
    backend: str = "torch",
    dtype: str = "float32",
    device: str = "cpu",
    steps: int | None = None,
    hparams: dict[str, Any] | None = None,
    on_run: Callable[[dict[str, Any], int, RunResult], None] | None = None,
) -> CalibrationReport:
    """Run the grid (see the module docstring) and return the evidence and the target."""
    suite = get_suite(suite_name)
    suite.check_data()
    if seeds < 1:
        raise ValueError("calibration needs at least one seed")
    lr_grid = tuple(lrs) if lrs else DEFAULT_LRS.get(optimizer, (1e-3,))
    axes: dict[str, Sequence[Any]] = {"lr": lr_grid}
    if weight_decays:
        axes["weight_decay"] = tuple(weight_decays)
    grid = "; ".join(f"{k} in {{{', '.join(f'{v:g}' for v in vals)}}}" for k, vals in axes.items())
    n_steps = int(steps) if steps is not None else calibration_steps(suite)
    configs = []
    for values in itertools.product(*axes.values()):
        hp = {**(hparams or {}), **dict(zip(axes, values, strict=True))}
        config = ConfigResult(hp)
        for seed in range(seeds):
            spec = RunSpec(
                suite=suite_name,
                optimizer=optimizer,
                backend=backend,
                seed=seed,
                steps=n_steps,
                hparams=dict(hp),
                device=device,
                dtype=dtype,
                time_budget_s=NO_TIME_BUDGET,
                stop_at_target=False,
                tag="calibration",
            )
            result = execute(spec)
            config.runs.append(result)
            if on_run is not None:
                on_run(hp, seed, result)
        configs.append(config)
    mode = metric_mode(suite.val_metric, suite)
    return CalibrationReport(suite, optimizer, backend, dtype, device, n_steps, seeds, grid, mode, configs)
