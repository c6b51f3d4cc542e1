"""The run loop: one optimizer on one suite, measured by the protocol of docs/measurement.md.

* Each step is timed between two device fences (``problem.block``); batch preparation,
  divergence checks and logging happen outside the timed region.
* A step during which the backend compiled (JAX; PyTorch under ``torch_compile``) — or the first
  step where nothing compiles (eager PyTorch's lazy initialisation) — is a warm-up step: its
  excess over the steady-state median is booked as ``compile_time_s`` and it counts as one
  median step on the time axis.
* Evaluation runs every ``eval_every`` steps, untimed, on the validation split and a fixed
  training subset; the target is checked there.
* Statuses: ``target_reached``, ``budget_exhausted`` (step or time budget spent, target
  missed), ``done`` (budget spent on a suite without target), ``diverged`` (non-finite loss,
  or above ``divergence_factor`` times the initial loss), ``oom``, ``timeout`` (wall clock
  past ``timeout_s``), ``error`` (exception in the adapter; traceback stored),
  ``interrupted`` (Ctrl-C). Sweeps add ``crashed`` for workers that died.

Everything a run produces is a :class:`RunResult`; a failed run is a result too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from backends.spec import hparams_dict
from db.limits import run_problems
from harness import keys
from harness.environment import fingerprint
from harness.errors import ConfigError
from harness.memory import MemoryMeter
from harness.registry import backend_module, get_adapter
from harness.step_checks import check_step_outputs, format_error
from harness.timing import timed_step
from leaderboard.labels import backend_label
from suites import get_suite
from suites.spec import Suite

#: Batch-loss and optimizer-stat points kept per run (evaluations are all kept).
LOG_POINTS = 250


class RunTimeout(Exception):
    """Raised inside the loop when the wall-clock limit of a run has passed."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that selects a run. ``steps``/``time_budget_s`` default to the suite's budget."""

    suite: str
    optimizer: str
    backend: str = "torch"
    seed: int = 0
    steps: int | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    tag: str | None = None
    time_budget_s: float | None = None
    timeout_s: float | None = None
    stop_at_target: bool = True
    eval_every: int | None = None
    #: Compile the step with ``torch.compile`` (torch only; JAX always jits): recorded in the
    #: stored spec, part of the run key, and a backend of its own on the board (``torch-compiled``).
    torch_compile: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def board_backend(self) -> str:
        """The backend the board ranks this run under (``torch-compiled`` for compiled PyTorch)."""
        return str(backend_label(self.backend, {"torch_compile": self.torch_compile}))


@dataclass
class RunResult:
    """A run's outcome: summary figures, metric series, environment. JSON-serialisable."""

    spec: RunSpec
    status: str = "error"
    error: str | None = None
    key: str | None = None
    suite_version: int | None = None
    adapter_version: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    steps: int = 0
    initial_train_loss: float | None = None
    final_train_loss: float | None = None
    final_metrics: dict[str, float] = field(default_factory=dict)
    val_metric: str | None = None
    best_val_metric: float | None = None
    target: str | None = None
    steps_to_target: int | None = None
    time_to_target_s: float | None = None
    train_time_s: float = 0.0
    compile_time_s: float = 0.0
    init_time_s: float = 0.0
    eval_time_s: float = 0.0
    #: Wall-clock time of the training loop, evaluations excluded: steps plus the harness's
    #: per-step work (batch preparation, fences, logging). ``train_time_s`` is steps only.
    loop_time_s: float = 0.0
    step_time_median_s: float | None = None
    step_time_mean_s: float | None = None
    step_time_p10_s: float | None = None
    step_time_p90_s: float | None = None
    #: Absolute peak of the run's process or device, and the timed steps' peak above the
    #: baseline taken before the first step (harness.memory; docs/measurement.md, "Memory").
    peak_memory_bytes: int | None = None
    peak_memory_above_baseline_bytes: int | None = None
    memory_kind: str | None = None
    #: Floating-point operations of one step, counted by the framework (``_step_flops``).
    flops_per_step: float | None = None
    passes_per_step: dict[str, float] = field(default_factory=dict)
    #: Long-format series: ``(step, time_s, name, value)``.
    metrics: list[tuple[int, float, str, float]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "target_reached", "budget_exhausted")

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, times, values)`` of one metric."""
        rows = [(s, t, v) for s, t, n, v in self.metrics if n == name]
        if not rows:
            return np.zeros(0, dtype=int), np.zeros(0), np.zeros(0)
        s, t, v = zip(*rows)
        return np.asarray(s), np.asarray(t), np.asarray(v)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["spec"] = self.spec.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        data = dict(data)
        data["spec"] = RunSpec(**data["spec"])
        data["metrics"] = [tuple(m) for m in data.get("metrics", [])]
        return cls(**data)


def metric_mode(metric: str, suite: Suite) -> str:
    """``max`` or ``min``: the suite target's mode, else by name (losses and errors fall)."""
    if suite.target is not None and suite.target.metric == metric:
        return suite.target.mode
    return "min" if metric.endswith(("loss", "rmse", "error")) else "max"


def classify_exception(exc: BaseException) -> str:
    """``oom`` for out-of-memory errors of any backend, else ``error``."""
    if isinstance(exc, MemoryError):
        return "oom"
    name = type(exc).__name__
    text = str(exc)
    if name == "OutOfMemoryError" or "out of memory" in text.lower() or "RESOURCE_EXHAUSTED" in text:
        return "oom"
    return "error"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _finite_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def check_limits(spec: Any, *, optimizer: str | None = None) -> None:
    """Refuse (``ConfigError``, every problem in one line) a run spec whose tag, names, device or
    seed no database could store (:mod:`db.limits`): found before the run, not after it.
    ``optimizer`` replaces the spec's (an approximation spec names its reference run's)."""
    problems = run_problems(
        suite=spec.suite,
        optimizer=spec.optimizer if optimizer is None else optimizer,
        backend=spec.backend,
        tag=spec.tag,
        device=spec.device,
        seed=spec.seed,
    )
    if problems:
        raise ConfigError("; ".join(problems))


def prepare(spec: RunSpec) -> tuple[Suite, type, Any]:
    """Resolve names and hyperparameters; raises the user errors of bad input (storage limits
    included: :func:`check_limits`)."""
    check_limits(spec)
    if spec.torch_compile and spec.backend != "torch":
        raise ConfigError(f"torch_compile applies to the torch backend only, not {spec.backend!r} (JAX always jits)")
    suite = get_suite(spec.suite)
    adapter_cls = get_adapter(spec.optimizer, spec.backend)
    hparams = adapter_cls.resolve(spec.hparams, spec.preset)
    if suite.likelihood not in adapter_cls.capabilities.likelihoods:
        raise ConfigError(f"optimizer {spec.optimizer!r} does not support likelihood {suite.likelihood!r}")
    if spec.dtype not in ("float32", "float64"):
        raise ConfigError(f"unknown dtype {spec.dtype!r} (known: float32, float64)")
    return suite, adapter_cls, hparams


def execute(
    spec: RunSpec,
    *,
    on_step: Callable[[int, int, float], None] | None = None,
    problem: Any = None,
) -> RunResult:
    """Run ``spec`` to completion and return its result (never raises for adapter failures).

    Bad input (unknown names, invalid hyperparameters) raises the user error before anything
    runs. ``on_step(step, total, loss)`` is called after every step (progress display).
    """
    suite, adapter_cls, hparams = prepare(spec)
    result = RunResult(
        spec=spec,
        suite_version=suite.version,
        adapter_version=keys.adapter_version(adapter_cls),
        hparams=hparams_dict(hparams),
        target=suite.target.describe() if suite.target else None,
        val_metric=suite.val_metric,
        started_at=_now(),
    )
    wall_start = time.perf_counter()
    meter: MemoryMeter | None = None
    try:
        backend = backend_module(spec.backend)
        if problem is None:
            problem = backend.build_problem(suite, seed=spec.seed, dtype=spec.dtype, device=spec.device)
        result.device = str(getattr(problem, "device", spec.device))
        result.environment = fingerprint(spec.backend, result.device)
        result.key = keys.run_key(spec, suite, adapter_cls, result.hparams, result.environment)
        meter = MemoryMeter(problem)
        _loop(spec, suite, adapter_cls, hparams, problem, result, wall_start, on_step, meter)
    except KeyboardInterrupt:
        result.status = "interrupted"
        result.error = "interrupted by the user (Ctrl-C)"
    except RunTimeout as exc:
        result.status = "timeout"
        result.error = str(exc)
    except Exception as exc:  # a failed run is a result, never a lost sweep
        result.status = classify_exception(exc)
        result.error = format_error(exc)
    finally:
        if meter is not None:
            # Reading memory must not mask the run's own outcome.
            with contextlib.suppress(Exception):
                result.peak_memory_bytes, result.peak_memory_above_baseline_bytes, result.memory_kind = meter.read()
        result.finished_at = _now()
    return result


def _loop(
    spec: RunSpec,
    suite: Suite,
    adapter_cls: type,
    hparams: Any,
    problem: Any,
    result: RunResult,
    wall_start: float,
    on_step: Callable[[int, int, float], None] | None,
    meter: MemoryMeter,
) -> None:
    total_steps = int(spec.steps or suite.budget.steps)
    time_budget = spec.time_budget_s if spec.time_budget_s is not None else suite.budget.time_s
    eval_every = int(spec.eval_every or suite.eval_every)
    log_every = max(1, total_steps // LOG_POINTS)
    mode = metric_mode(suite.val_metric, suite)
    metrics = result.metrics

    problem.step_budget = total_steps
    adapter = adapter_cls()
    t0 = time.perf_counter()
    params = problem.params0
    state = adapter.init(problem, hparams)
    problem.block(params, state)
    result.init_time_s = time.perf_counter() - t0
    # Compiled PyTorch compiles during the first steps; the loop books them as it books JAX's.
    step_fn = problem.make_step(adapter, compiled=True) if spec.torch_compile else problem.make_step(adapter)

    step_times: list[float] = []
    warmup_times: list[float] = []
    clock = 0.0  # steady-state time axis (warm-up steps count as one median step)
    unbooked: list[int] = []  # metric-row positions after warm-up steps not yet on the clock
    counts_before = problem.counters.snapshot()
    initial_loss: float | None = None

    def evaluate(step: int) -> dict[str, float]:
        meter.pause()  # an evaluation's memory is not the steps'
        start = time.perf_counter()
        ev = problem.evaluate(adapter.eval_params(problem, params, state))  # untimed, like prepare_for_eval
        result.eval_time_s += time.perf_counter() - start
        meter.resume()
        for name, value in ev.items():
            metrics.append((step, clock, name, value))
        result.final_metrics = ev
        if suite.val_metric in ev and math.isfinite(ev[suite.val_metric]):
            v = ev[suite.val_metric]
            best = result.best_val_metric
            if best is None or (v > best if mode == "max" else v < best):
                result.best_val_metric = v
        if suite.target is not None and result.steps_to_target is None and suite.target.reached(ev):
            result.steps_to_target, result.time_to_target_s = step, clock
        return ev

    def check_wall() -> None:
        if spec.timeout_s is not None and time.perf_counter() - wall_start > spec.timeout_s:
            raise RunTimeout(f"run exceeded its {spec.timeout_s:g} s wall-clock limit at step {result.steps}")

    ev0 = evaluate(0)
    result.initial_train_loss = ev0.get("train_loss")
    status = "done" if suite.target is None else "budget_exhausted"
    if result.steps_to_target is not None and spec.stop_at_target:
        total_steps = 0
        status = "target_reached"

    meter.baseline()  # problem, data and optimizer state exist; the first timed step comes next
    loop_start = time.perf_counter()
    eval_before = result.eval_time_s
    for step in range(total_steps):
        batch = problem.device_batch(step)
        compiles = step_fn.compile_count
        params, state, stats, dt = timed_step(problem, step_fn, params, state, batch)
        check_step_outputs(problem, step, params, problem.params0, stats)
        # A step that compiled is warm-up; where nothing ever compiles, the first step is.
        # Its memory peak, like its time, is booked apart (harness.memory).
        warmup = step_fn.compile_count > compiles or (step == 0 and step_fn.compile_count == 0)
        meter.step_done(warmup)
        if warmup:
            warmup_times.append(dt)
            if step_times:
                clock += float(np.median(step_times))
            else:
                unbooked.append(len(metrics))  # booked at the median once it is known
        else:
            step_times.append(dt)
            clock += dt
        result.steps = step + 1

        loss = _finite_float(stats.get("loss"))
        if initial_loss is None:
            initial_loss = loss
        threshold = suite.divergence_factor * max(abs(initial_loss) if math.isfinite(initial_loss) else 0.0, 1e-3)
        diverged = not math.isfinite(loss) or loss > threshold
        if diverged or step % log_every == 0 or step == total_steps - 1:
            metrics.append((step, clock, "train_loss_batch", loss))
            for name, value in stats.items():
                if name != "loss":
                    metrics.append((step, clock, f"opt_{name}", _finite_float(value)))
        if on_step is not None:
            on_step(step + 1, total_steps, loss)
        if diverged:
            status = "diverged"
            result.error = f"loss {loss:.6g} at step {step} (initial {initial_loss:.6g}, threshold {threshold:.6g})"
            break

        done_steps = step + 1
        if done_steps % eval_every == 0 or done_steps == total_steps:
            ev = evaluate(done_steps)
            if any(not math.isfinite(v) for k, v in ev.items() if k.endswith("loss")):
                status = "diverged"
                result.error = f"non-finite evaluation loss after step {done_steps}"
                break
            if result.steps_to_target is not None and spec.stop_at_target:
                status = "target_reached"
                break
        if time_budget is not None and clock >= time_budget:
            if done_steps % eval_every != 0 and done_steps != total_steps:
                evaluate(done_steps)
            break
        check_wall()

    result.loop_time_s = time.perf_counter() - loop_start - (result.eval_time_s - eval_before)
    if status not in ("diverged",) and result.steps_to_target is not None:
        status = "target_reached"
    result.status = status
    result.final_train_loss = result.final_metrics.get("train_loss")
    steady = np.asarray(step_times) if step_times else np.asarray(warmup_times)
    if steady.size:
        result.step_time_median_s = float(np.median(steady))
        result.step_time_mean_s = float(np.mean(steady))
        result.step_time_p10_s = float(np.percentile(steady, 10))
        result.step_time_p90_s = float(np.percentile(steady, 90))
    median = result.step_time_median_s or 0.0
    result.compile_time_s = float(sum(max(0.0, t - median) for t in warmup_times))
    _book_unbooked(result, unbooked, median)
    result.train_time_s = clock + median * len(unbooked)
    counts_after = problem.counters.snapshot()
    if result.steps:
        result.passes_per_step = {k: (counts_after[k] - counts_before.get(k, 0)) / result.steps for k in counts_after}
        meter.pause()  # counting FLOPs runs a throwaway step (and compiles, in JAX): not the run's memory
        # The eager step does the same arithmetic; counting a compiled one would compile again.
        eager_fn = problem.make_step(adapter) if spec.torch_compile else step_fn
        result.flops_per_step = _step_flops(spec, adapter, hparams, problem, eager_fn, params, state)


def _step_flops(
    spec: RunSpec, adapter: Any, hparams: Any, problem: Any, step_fn: Any, params: Any, state: Any
) -> float | None:
    """FLOPs of one step as the framework counts them (docs/measurement.md, "FLOPs"), after the
    loop and untimed: PyTorch executes one step on a throwaway state and a copy of the
    parameters under its FLOP counter; JAX reads XLA's cost analysis of the jitted step. A
    failure to count is a missing figure, never a failed run."""
    try:
        if spec.backend == "torch":
            state = adapter.init(problem, hparams)  # a step may consume its state: count on a fresh one
        flops = backend_module(spec.backend).step_flops(step_fn, params, state, problem.device_batch(0))
    except Exception:
        return None
    # Zero is a count (a model without matrix products, e.g. Rosenbrock, under torch's counter).
    return float(flops) if flops is not None and math.isfinite(flops) and flops >= 0 else None


def _book_unbooked(result: RunResult, positions: list[int], median: float) -> None:
    """Put warm-up steps that preceded every steady step on the time axis at the median."""
    if not positions or median == 0.0:
        return
    shifts = np.zeros(len(result.metrics) + 1)
    for pos in positions:
        shifts[pos] += median
    offset = np.cumsum(shifts)
    target_row = None
    if result.steps_to_target is not None:
        target_row = next(
            (
                i
                for i, (s, t, _, _) in enumerate(result.metrics)
                if s == result.steps_to_target and t == result.time_to_target_s
            ),
            None,
        )
    result.metrics = [(s, t + float(offset[i]), n, v) for i, (s, t, n, v) in enumerate(result.metrics)]
    if target_row is not None:
        result.time_to_target_s = result.metrics[target_row][1]
