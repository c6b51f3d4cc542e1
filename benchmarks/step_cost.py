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
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from benchmarks import backend_gap, method_algebra, pass_costs
from harness.timing import timed_step
from suites import get_suite
from suites.layers import Linear, ModelSpec, Tanh
from suites.spec import Suite


def _wide_digits() -> Suite:
    base = get_suite("digits-mlp")
    model = ModelSpec((64,), (Linear(64, 320), Tanh(), Linear(320, 256), Tanh(), Linear(256, 10)))
    return base.replace(name="digits-wide", model=model, description="benchmark-only: 64-320-256-10 tanh MLP")


PROBLEMS = {"digits-mlp": lambda: get_suite("digits-mlp"), "digits-wide": _wide_digits}


@dataclass
class Cost:
    backend: str
    problem: str
    adapter: str
    params: int
    median_s: float
    p10_s: float
    p90_s: float
    compile_s: float
    ratio_to_sgd: float
    passes: dict[str, float]
    status: str = "ok"
    #: What the counted passes cost on their own (``benchmarks.pass_costs.floor``), and
    #: ``median_s / floor_s``.
    floor_s: float = float("nan")
    efficiency: float = float("nan")
    #: The method's dense linear algebra per step (``benchmarks.method_algebra``; NaN for a
    #: method without a probe) and ``median_s / (floor_s + algebra_s)``.
    algebra_s: float = float("nan")
    efficiency_algebra: float = float("nan")
    #: The same algebra timed after a pass, as a step runs it (``method_algebra.AfterPass``),
    #: and ``median_s / (floor_s + algebra_after_pass_s)``.
    algebra_after_pass_s: float = float("nan")
    efficiency_after_pass: float = float("nan")


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


def _passes(lane: Lane) -> dict[str, float]:
    after = lane.problem.counters.snapshot()
    return {k: (after[k] - lane.counts0.get(k, 0)) / len(lane.times) for k in after}


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
    (``benchmarks.method_algebra.probes_for``) and report each adapter's ``algebra_s`` and
    ``efficiency_algebra`` (``step / (floor + algebra)``).

    Each lane takes ``block`` consecutive steps per turn, as a run takes its steps back to back:
    with one step per turn every step started with the caches full of the other lanes' arrays,
    which charged a cheap step (SGD's) up to a fifth more than a run's loop measures it and so
    lowered every ratio to SGD (docs/profiling.md, "Run against benchmark"). ``block=1`` is the
    former step-by-step interleaving."""
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
    extra = {**probes, **method_algebra.after_pass(probes), **(extra or {})}
    for name, stepper in extra.items():
        lanes[name] = _lane(module, suite, stepper, None)
    timer = CLOCKS[clock]
    batches = {name: [lane.problem.device_batch(i) for i in range(rounds + warmup)] for name, lane in lanes.items()}
    order = list(lanes.items())
    for index, turn in enumerate(_turns(rounds + warmup, block)):
        for name, lane in _shuffled(order, index) if shuffle else order:
            for i in turn:
                if lane.error is not None:
                    break
                if i == warmup:
                    lane.counts0 = lane.problem.counters.snapshot()
                try:
                    lane.params, lane.state, _, dt = timed_step(
                        lane.problem, lane.step, lane.params, lane.state, batches[name][i], clock=timer
                    )
                except Exception as exc:  # a failing adapter is reported, not fatal to the table
                    lane.error = f"{type(exc).__name__}: {exc}"
                    break
                (lane.warm if i < warmup else lane.times).append(dt)
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


def format_table(costs: list[Cost]) -> str:
    lines = [
        "| backend | problem | adapter | params | median step | p10–p90 | ratio to SGD | floor | efficiency "
        "| algebra: alone / after a pass | step / (floor + algebra): alone / after a pass | compile "
        "| passes (f/b/jvp/vjp/ps) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in costs:
        if c.status != "ok":
            lines.append(
                f"| {c.backend} | {c.problem} | {c.adapter} | {c.params} | failed: {c.status} | | | | | | | | |"
            )
            continue
        p = c.passes
        passes = "/".join(f"{p.get(k, 0):.2g}" for k in pass_costs.PASS_KINDS)
        lines.append(
            f"| {c.backend} | {c.problem} | {c.adapter} | {c.params} | {c.median_s * 1e3:.3f} ms | "
            f"{c.p10_s * 1e3:.2f}–{c.p90_s * 1e3:.2f} ms | {c.ratio_to_sgd:.2f} | {c.floor_s * 1e3:.3f} ms | "
            f"{c.efficiency:.2f} | {_pair(c.algebra_s * 1e3, c.algebra_after_pass_s * 1e3, ' ms')} | "
            f"{_pair(c.efficiency_algebra, c.efficiency_after_pass, '')} | "
            f"{c.compile_s:.2f} s | {passes} |"
        )
    return "\n".join(lines)


def _pair(alone: float, after: float, unit: str) -> str:
    """``alone / after`` (3 decimals with a unit, 2 for a ratio); empty where not measured."""
    if np.isnan(alone):
        return ""
    digits = 3 if unit else 2
    return f"{alone:.{digits}f}{unit}" if np.isnan(after) else f"{alone:.{digits}f} / {after:.{digits}f}{unit}"


def format_pass_costs(tables: dict[tuple[str, str], dict[str, float]]) -> str:
    """The per-pass-kind costs behind the floors, one row per (backend, problem)."""
    kinds = pass_costs.PASS_KINDS
    lines = ["| backend | problem | " + " | ".join(kinds) + " |", "|---|---|" + "---:|" * len(kinds)]
    for (backend, problem), costs in tables.items():
        cells = " | ".join(f"{costs[k] * 1e3:.3f} ms" if k in costs else "" for k in kinds)
        lines.append(f"| {backend} | {problem} | {cells} |")
    return "\n".join(lines)


#: Version of the ``--json`` document (:func:`table_json`).
JSON_FORMAT = "ngbench-step-cost/1"


def _json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def table_json(costs: list[Cost], tables: dict[tuple[str, str], dict[str, float]], settings: dict[str, Any]) -> str:
    """The ``--json`` document: ``format``, the measurement's ``settings`` (backends, problems,
    adapters, rounds, warmup, threads, block), ``rows`` as ``db.step_costs.save_step_costs``
    takes them (the algebra figures also inside ``passes``) and the per-kind ``pass_costs``;
    missing figures are ``null``."""
    from dataclasses import asdict

    document = {
        "format": JSON_FORMAT,
        "settings": settings,
        "rows": [_stored_row(asdict(c)) for c in costs],
        "pass_costs": [{"backend": b, "problem": p, "costs": costs} for (b, p), costs in tables.items()],
    }
    return json.dumps(_json_ready(document), indent=1, allow_nan=False) + "\n"


def write_json(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a table)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, target)


def _asv_params() -> tuple[list[str], list[str], list[str]]:
    from backends.methods import BUILTIN_METHODS
    from harness import registry

    backends = [b for b in ("torch", "jax") if registry.backend_available(b)]
    return backends, list(PROBLEMS), list(BUILTIN_METHODS)


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


def machine_description(backends: list[str], threads: int | None) -> str:
    """Where a table was measured, in words: host, CPU, cores, threads and framework versions."""
    from harness import environment

    record = environment.fingerprint(backends[0], "cpu") if backends else {}
    versions = ", ".join(f"{b} {record.get(b)}" for b in backends if record.get(b))
    return (
        f"{record.get('hostname')}: {record.get('cpu')} ({record.get('cpu_count')} cores), "
        f"{threads or 'default'} thread(s); {versions}"
    )


#: The figures of a :class:`Cost` stored inside its ``passes`` JSON.
ALGEBRA_FIELDS = ("algebra_s", "efficiency_algebra", "algebra_after_pass_s", "efficiency_after_pass")


def _stored_row(row: dict[str, Any]) -> dict[str, Any]:
    """A :class:`Cost` as ``db.step_costs`` stores it: the algebra figures ride in the JSON
    ``passes`` field (:data:`ALGEBRA_FIELDS`) where the method has a probe."""
    extra = {k: row[k] for k in ALGEBRA_FIELDS if not np.isnan(row.get(k, float("nan")))}
    return {**row, "passes": {**row["passes"], **extra}}


def store_table(
    db: str | None, costs: list[Cost], backends: list[str], threads: int | None, rounds: int, store: Any = None
) -> int:
    """Append ``costs`` to the database ``db`` (``db.step_costs``) with the machine, threads,
    commit and time of the measurement; returns the rows written."""
    from dataclasses import asdict

    from db.step_costs import save_step_costs
    from db.store import open_store
    from harness import environment

    commit, dirty = environment.git_state()
    target = store or open_store(db, writable=True)
    try:
        return save_step_costs(
            target,
            [_stored_row(asdict(c)) for c in costs],
            machine=machine_description(backends, threads),
            threads=threads,
            git_commit=commit,
            git_dirty=dirty,
            rounds=rounds,
        )
    finally:
        if store is None:
            target.dispose()


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
    backends = args.backend or [b for b in ("torch", "jax") if registry.backend_available(b)]
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
    for backend in backends:
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
