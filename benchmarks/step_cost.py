"""Per-step cost of every adapter, as time and as a ratio to SGD's step in the same process.

Protocol (as docs/measurement.md, "Anchor step costs"): every adapter gets its own problem (same suite,
seed and data) and its own trajectory from the same initial parameters; adapters are called
**round-robin** in turns of ``block`` (10) consecutive steps, each step on its own batch, so
machine noise hits all of them alike while each adapter's steps run back to back as in a run.
Each step runs through the backend's prepared step (jitted in JAX) between device fences
(``harness.timing.timed_step``, the run loop's timed region). The first ``warmup`` steps
(compilation, allocator warm-up) are discarded and reported as compile time; the figure is the
median over the timed steps, and the ratio divides it by SGD's median from the same rounds.
Passes per step come from the oracle's counters.

Problems: ``digits-mlp`` (26,122 parameters, batch 32) and ``digits-wide`` (a 64-320-256-10
tanh MLP on the same data, 105,546 parameters, batch 32: the ~10^5-trainable-parameter size of
parameter-efficient fine-tuning, where the iEF paper reports EF/iEF at AdamW's speed).

Run directly for the table (both backends if installed)::

    python -m benchmarks.step_cost [--backend torch jax] [--problem digits-mlp digits-wide]
                                   [--rounds 100] [--warmup 10] [--threads 2] [--store [DB]]
                                   [--block 10] [--json PATH] [--clock wall|thread]

With both backends, a third table sets each torch step against JAX's for the same method and
says whether an eager torch step could come within 1.2x of it (``benchmarks.backend_gap``).

``--store`` appends the table to the database (``db.step_costs``; the optimizer pages show it).
``--json PATH`` writes the table as JSON (:func:`table_json`), as ``ngbench nightly`` reads it
from a child process that holds no database URL (``harness.nightly_step_cost``).

asv: ``StepCost.track_ratio_to_sgd`` and ``track_step_time`` per (backend, problem, adapter).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from benchmarks import backend_gap, method_algebra, pass_costs
from benchmarks.step_cost_table import (  # the table's rows and their outputs
    Cost,
    format_pass_costs,
    format_table,
    store_table,
    table_json,
    write_json,
)
from harness.timing import timed_step
from suites import get_suite
from suites.layers import Linear, ModelSpec, Tanh
from suites.spec import Suite


def _wide_digits() -> Suite:
    base = get_suite("digits-mlp")
    model = ModelSpec((64,), (Linear(64, 320), Tanh(), Linear(320, 256), Tanh(), Linear(256, 10)))
    return base.replace(name="digits-wide", model=model, description="benchmark-only: 64-320-256-10 tanh MLP")


PROBLEMS = {"digits-mlp": lambda: get_suite("digits-mlp"), "digits-wide": _wide_digits}


class Measurement(NamedTuple):
    """The adapters' costs on one (backend, problem), and the per-pass-kind costs behind their floors."""

    costs: list[Cost]
    pass_costs: dict[str, float]
    #: Median step of each extra lane (``measure(extra=...)``), by name, as measured (each
    #: adapter's ``algebra_s`` takes the null lane's median off its lanes:
    #: ``benchmarks.method_algebra.net_of_call``).
    extra: dict[str, float]


@dataclass
class Lane:
    """One adapter (or probe) with its own problem, trajectory and timings."""

    problem: Any
    step: Any
    params: Any
    state: Any
    times: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    error: str | None = None
    counts0: dict[str, int] = field(default_factory=dict)


def _lane(module: Any, suite: Suite, adapter: Any, hparams: Any) -> Lane:
    prob = module.build_problem(suite, seed=0, dtype="float32", device="cpu")
    return Lane(prob, prob.make_step(adapter), prob.params0, adapter.init(prob, hparams))


def _adapter_lane(module: Any, suite: Suite, available: dict[str, Any], name: str) -> Lane:
    """The lane of ``name``: an adapter at its defaults, or ``adapter:preset`` at that preset."""
    adapter, _, preset = name.partition(":")
    cls = available[adapter]
    return _lane(module, suite, cls(), cls.resolve(None, preset or None))


def passes_since(problem: Any, before: dict[str, int], steps: int) -> dict[str, float]:
    """Passes per step counted on ``problem`` since the counters read ``before``, over ``steps`` steps."""
    after = problem.counters.snapshot()
    return {k: (after[k] - before.get(k, 0)) / steps for k in after}


def _passes(lane: Lane) -> dict[str, float]:
    return passes_since(lane.problem, lane.counts0, len(lane.times))


#: Consecutive steps an adapter takes per turn of the round-robin (see :func:`measure`).
BLOCK = 10
#: The step clocks: ``wall`` as a run times its steps; ``thread`` the calling thread's CPU time (a
#: diagnostic for a busy machine: it leaves out the time the process waits for a core).
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def _turns(total: int, block: int) -> list[range]:
    """The step indices ``0 .. total-1`` in turns of ``block`` consecutive steps."""
    return [range(start, min(start + block, total)) for start in range(0, total, max(1, block))]


def _shuffled(order: list[Any], turn: int) -> list[Any]:
    """The lanes of turn ``turn`` in an order drawn for that turn (seeded by it, so a table is
    repeatable): a fixed order gives each lane the same predecessor every turn, and a copy of
    the gradient probe measured up to 15 % more or less depending on the lane before it
    (docs/profiling.md, "A torch step's fixed cost"); turn 0 keeps the given order."""
    if turn == 0:
        return list(order)
    return [order[i] for i in np.random.default_rng(turn).permutation(len(order))]


def measure(
    backend: str,
    problem: str,
    adapters: list[str] | None = None,
    rounds: int = 100,
    warmup: int = 10,
    extra: dict[str, Any] | None = None,
    block: int = BLOCK,
    algebra: bool = True,
    shuffle: bool = True,
    clock: str = "wall",
) -> Measurement:
    """Round-robin step timing of ``adapters`` (default: all in ``backend``) on ``problem``, with
    the pass-kind probes of ``benchmarks.pass_costs`` in the same rounds (floor and efficiency).
    ``extra``: more probe-like steppers (``init``, ``step``) timed in the same rounds, reported
    by name in :attr:`Measurement.extra` (e.g. a method's linear algebra on its own).
    ``clock``: ``wall`` (a run's clock) or ``thread`` (:data:`CLOCKS`).
    ``algebra``: also time the linear-algebra probes of the measured methods
    (``benchmarks.method_algebra.probes_for``), alone and after a pass, and report each
    adapter's ``algebra_s`` and ``efficiency_algebra`` (``step / (floor + algebra)``) and their
    after-a-pass counterparts.

    Each lane takes ``block`` consecutive steps per turn, as a run takes its steps back to back:
    with one step per turn every step started with the caches full of the other lanes' arrays,
    which charged a cheap step (SGD's) up to a fifth more than a run's loop measures it and so
    lowered every ratio to SGD (docs/profiling.md, "Run against benchmark"). ``block=1`` is the
    former step-by-step interleaving."""
    lanes, names, extra_names = _lanes_of(backend, problem, adapters, extra, algebra)
    _run_turns(lanes, rounds, warmup, block, shuffle, CLOCKS[clock])
    return _summary(backend, problem, lanes, names, extra_names, rounds, warmup)


def _lanes_of(
    backend: str, problem: str, adapters: list[str] | None, extra: dict[str, Any] | None, algebra: bool
) -> tuple[dict[str, Lane], list[str], list[str]]:
    """The lanes of one backend (adapters, pass probes, algebra lanes alone and after a pass,
    ``extra``), the adapters' names and the extra lanes' names."""
    from harness import registry

    module = registry.backend_module(backend)
    available = registry.adapters(backend)
    names = adapters or list(available)
    if "sgd" not in names:
        names = ["sgd", *names]
    suite = PROBLEMS[problem]()
    lanes = {name: _adapter_lane(module, suite, available, name) for name in names}
    for query in pass_costs.QUERIES:
        probe = pass_costs.Probe(query)
        lanes[probe.name] = _lane(module, suite, probe, None)
    probes = method_algebra.probes_for(names) if algebra else {}
    steppers = {**probes, **method_algebra.after_pass(probes), **(extra or {})}
    for name, stepper in steppers.items():
        lanes[name] = _lane(module, suite, stepper, None)
    return lanes, names, list(steppers)


def _run_turns(lanes: dict[Any, Lane], rounds: int, warmup: int, block: int, shuffle: bool, timer: Any) -> None:
    """Every lane's ``warmup + rounds`` steps, in turns of ``block`` per lane (drawn order per
    turn unless ``shuffle`` is false); a lane that raises keeps its error and stops."""
    batches = {key: [lane.problem.device_batch(i) for i in range(rounds + warmup)] for key, lane in lanes.items()}
    order = list(lanes.items())
    for index, turn in enumerate(_turns(rounds + warmup, block)):
        for key, lane in _shuffled(order, index) if shuffle else order:
            for i in turn:
                if lane.error is not None:
                    break
                if i == warmup:
                    lane.counts0 = lane.problem.counters.snapshot()
                try:
                    lane.params, lane.state, _, dt = timed_step(
                        lane.problem, lane.step, lane.params, lane.state, batches[key][i], clock=timer
                    )
                except Exception as exc:  # a failing adapter is reported, not fatal to the table
                    lane.error = f"{type(exc).__name__}: {exc}"
                    break
                (lane.warm if i < warmup else lane.times).append(dt)


def _summary(
    backend: str,
    problem: str,
    lanes: dict[str, Lane],
    names: list[str],
    extra: list[str],
    rounds: int,
    warmup: int,
) -> Measurement:
    """The :class:`Measurement` of one backend's timed lanes."""
    probes = {n: lane for n, lane in lanes.items() if n.startswith("probe:") and lane.times and lane.error is None}
    probe_passes = {n: _passes(lane) for n, lane in probes.items()}
    costs = pass_costs.pass_costs(probe_passes, {n: float(np.median(lane.times)) for n, lane in probes.items()})
    out = []
    sgd_median = float(np.median(lanes["sgd"].times))
    extra_medians = {n: float(np.median(lanes[n].times)) for n in extra if lanes[n].times and lanes[n].error is None}
    algebra_medians = method_algebra.net_of_call(extra_medians)  # less a second step call's own cost
    after_pass_medians = method_algebra.net_of_pass(extra_medians)  # less a gradient's lane
    for name in names:
        lane = lanes[name]
        prob = lane.problem
        if lane.error is not None or not lane.times:
            out.append(Cost(backend, problem, name, prob.num_params, *[float("nan")] * 5, {}, lane.error or "no steps"))
            continue
        times = np.asarray(lane.times)
        med = float(np.median(times))
        passes = _passes(lane)
        floor_s = pass_costs.floor(passes, costs)
        solving = method_algebra.solve_steps_per_step(prob, rounds, warmup)
        algebra_s = method_algebra.algebra_per_step(name, algebra_medians, rounds, warmup, solving)
        after_s = method_algebra.algebra_per_step(name, after_pass_medians, rounds, warmup, solving)
        out.append(
            Cost(
                backend,
                problem,
                name,
                prob.num_params,
                med,
                float(np.percentile(times, 10)),
                float(np.percentile(times, 90)),
                float(sum(max(0.0, t - med) for t in lane.warm)),
                med / sgd_median,
                passes,
                floor_s=floor_s,
                efficiency=med / floor_s if floor_s > 0 else float("nan"),
                algebra_s=algebra_s,
                efficiency_algebra=method_algebra.efficiency_with_algebra(med, floor_s, algebra_s),
                algebra_after_pass_s=after_s,
                efficiency_after_pass=method_algebra.efficiency_with_algebra(med, floor_s, after_s),
            )
        )
    return Measurement(out, costs, extra_medians)


def measured_backends(asked: list[str] | None) -> list[str]:
    """``--backend`` as given, or every installed backend (torch, then JAX)."""
    from harness import registry

    return asked or [b for b in ("torch", "jax") if registry.backend_available(b)]


def _asv_params() -> tuple[list[str], list[str], list[str]]:
    from backends.methods import BUILTIN_METHODS

    return measured_backends(None), list(PROBLEMS), list(BUILTIN_METHODS)


class StepCost:
    """asv: one measurement per (backend, problem) shared by all adapters of that pair."""

    params = _asv_params()
    param_names = ("backend", "problem", "adapter")
    timeout = 900
    _cache: ClassVar[dict[tuple[str, str], dict[str, Cost]]] = {}

    def setup(self, backend: str, problem: str, adapter: str) -> None:
        key = (backend, problem)
        if key not in self._cache:
            self._cache[key] = {c.adapter: c for c in measure(backend, problem, rounds=60, warmup=8).costs}
        if adapter not in self._cache[key]:
            raise NotImplementedError  # asv records the combination as skipped
        self.cost = self._cache[key][adapter]

    def track_ratio_to_sgd(self, backend: str, problem: str, adapter: str) -> float:
        return self.cost.ratio_to_sgd

    track_ratio_to_sgd.unit = "ratio"  # type: ignore[attr-defined]

    def track_step_time(self, backend: str, problem: str, adapter: str) -> float:
        return self.cost.median_s

    track_step_time.unit = "seconds"  # type: ignore[attr-defined]

    def track_passes_per_step(self, backend: str, problem: str, adapter: str) -> float:
        p = self.cost.passes
        return float(p.get("forward", 0) + p.get("backward", 0) + p.get("jvp", 0) + p.get("vjp", 0))

    track_passes_per_step.unit = "passes"  # type: ignore[attr-defined]

    def track_floor(self, backend: str, problem: str, adapter: str) -> float:
        return self.cost.floor_s

    track_floor.unit = "seconds"  # type: ignore[attr-defined]

    def track_efficiency(self, backend: str, problem: str, adapter: str) -> float:
        return self.cost.efficiency

    track_efficiency.unit = "ratio"  # type: ignore[attr-defined]

    def track_efficiency_with_algebra(self, backend: str, problem: str, adapter: str) -> float:
        return self.cost.efficiency_algebra

    track_efficiency_with_algebra.unit = "ratio"  # type: ignore[attr-defined]

    def track_efficiency_after_pass(self, backend: str, problem: str, adapter: str) -> float:
        return self.cost.efficiency_after_pass

    track_efficiency_after_pass.unit = "ratio"  # type: ignore[attr-defined]


def measurement_arguments(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    """The options every step-cost entry point takes: ``--backend`` (unless ``backend`` is
    false), ``--problem``, ``--rounds``, ``--warmup`` and ``--threads``."""
    if backend:
        parser.add_argument("--backend", nargs="+", default=None)
    parser.add_argument("--problem", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` when asked (``--threads``)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def main(description: str = "Per-step cost of every adapter (ratio to SGD).", default_adapters: Any = None) -> None:
    parser = argparse.ArgumentParser(description=description)
    measurement_arguments(parser)
    parser.add_argument("--adapter", nargs="+", default=default_adapters, help="adapters, or adapter:preset")
    parser.add_argument("--block", type=int, default=BLOCK, help="consecutive steps per adapter per turn")
    parser.add_argument(
        "--fixed-order",
        action="store_true",
        help="run the lanes in the same order every turn (default: drawn per turn)",
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: time.perf_counter, as runs are timed (default); thread: the calling thread's CPU "
        "time, which leaves out waiting for a core on a busy machine (torch with --threads 1 only)",
    )
    parser.add_argument(
        "--store",
        nargs="?",
        const="",
        default=None,
        metavar="DB",
        help="append the table to a database (default: NGBENCH_DB_URL or ./ngbench.db); "
        "the optimizer pages show the newest row per backend, problem and adapter",
    )
    parser.add_argument(
        "--json", default=None, metavar="PATH", help="also write the table as JSON (what ngbench nightly stores)"
    )
    args = parser.parse_args()
    import sys

    from harness import registry
    from harness.errors import USER_ERRORS

    set_threads(args.threads)
    backends = measured_backends(args.backend)
    try:  # bad names are one line and exit status 2, before anything is measured
        for backend in backends:
            available = registry.adapters(backend)
            for name in args.adapter or []:
                adapter, _, preset = name.partition(":")
                if adapter not in available:
                    raise ValueError(f"unknown adapter {adapter!r} on {backend}")
                available[adapter].resolve(None, preset or None)
        for problem in args.problem:
            if problem not in PROBLEMS:
                raise ValueError(f"unknown problem {problem!r} (known: {', '.join(PROBLEMS)})")
        if args.clock == "thread" and (args.store is not None or args.json is not None):
            raise ValueError("--clock thread is a diagnostic: stored tables are wall-clock, as runs are timed")
        if args.clock == "thread" and (backends != ["torch"] or args.threads != 1):
            raise ValueError(
                "--clock thread counts the calling thread only: use it with --backend torch --threads 1 "
                "(JAX runs its programs on threads of its own)"
            )
        if args.json is not None and not Path(args.json).parent.is_dir():
            raise ValueError(f"--json {args.json}: no directory {Path(args.json).parent}")
    except (ValueError, *USER_ERRORS) as exc:
        print(f"ngbench: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    store = None
    if args.store is not None:  # refuse a database that cannot take the table before measuring
        from db.store import open_store

        try:
            store = open_store(args.store or None, writable=True)
        except USER_ERRORS as exc:
            print(f"ngbench: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    costs: list[Cost] = []
    tables: dict[tuple[str, str], dict[str, float]] = {}
    for backend in backends:  # each in rounds of its own, as a run has its process to itself
        for problem in args.problem:
            measured = measure(
                backend,
                problem,
                args.adapter,
                args.rounds,
                args.warmup,
                block=args.block,
                shuffle=not args.fixed_order,
                clock=args.clock,
            )
            costs.extend(measured.costs)
            tables[(backend, problem)] = measured.pass_costs
    print(format_table(costs))
    print()
    print(format_pass_costs(tables))
    compared = backend_gap.gaps(costs)
    if compared:
        print()
        print(backend_gap.format_gaps(compared))
    if args.json is not None:
        settings = {
            "backends": backends,
            "problems": args.problem,
            "adapters": args.adapter,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "threads": args.threads,
            "block": args.block,
            "lane_order": "fixed" if args.fixed_order else "shuffled",
        }
        write_json(args.json, table_json(costs, tables, settings))
    if store is not None:
        written = store_table(None, costs, backends, args.threads, args.rounds, store=store)
        store.dispose()
        print(f"\nstored {written} rows in {store.display_url}")


if __name__ == "__main__":
    main()
