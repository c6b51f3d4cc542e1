"""The time an eager torch step spends inside its own oracle passes, timed in the step itself.

The step-cost table prices an adapter's passes with probes that repeat one question step after
step (``benchmarks.pass_costs``); on small models a pass costs more inside a step, where it
follows a different pass or the method's own arithmetic (``benchmarks.pass_context``). This
benchmark measures the passes where they run: an *instrumented* lane of each adapter runs its
step with a clock around every oracle entry point that performs a pass (:func:`entry_points`:
the graph forward, the value forward, the reverse pass, the JVP, the per-sample and batched
passes), in the same rounds as the step-cost table's lanes. Per adapter::

    passes in step = median over steps of the time spent inside those entry points
    rest           = the instrumented step's median - passes in step  (the method's arithmetic
                     and its glue)

next to the floor and algebra of the step-cost table. Nested entry points (a batched reverse
pass calls the reverse pass) are timed once, at the outermost. Eager CPU only: on CUDA a pass
returns before its kernels finish, and in JAX the passes are one compiled program.

Self-check: every pass the counters record during an instrumented step must be recorded inside
a timed entry point; ``untimed`` counts those that were not (a new entry point this list lacks),
and a row with any is not to be trusted.

    OMP_NUM_THREADS=1 python -m benchmarks.passes_in_step --threads 1 [--problem digits-mlp digits-wide]
                                                          [--adapter sgd kfac adamqlr] [--rounds 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

from benchmarks.step_cost import measure, measurement_arguments, set_threads


def entry_points() -> list[tuple[Any, str]]:
    """``(owner, attribute)`` of every torch function that performs a counted pass."""
    from backends.torch import batched_passes, oracle, sample_space
    from backends.torch.optimizers import adamqlr

    cls = oracle.TorchOracle
    return [
        (cls, "_forward"),
        (cls, "loss_value"),
        (cls, "reverse"),
        (cls, "jvp"),
        (cls, "per_sample_grads"),
        (cls, "output_jacobian"),
        (sample_space, "per_sample_cotangent_grads"),
        (batched_passes, "tap_grads_many"),
        (batched_passes, "output_tangents"),
        (adamqlr, "hessian_quadratic"),
    ]


class _Clock:
    """Time inside the outermost timed entry point, and counted passes outside any."""

    def __init__(self) -> None:
        self.depth = 0
        self.inside = 0.0
        self.untimed = 0


def _bindings(originals: dict[int, Any]) -> list[tuple[Any, str, Any]]:
    """Every module attribute of the torch backend that is one of ``originals`` (an entry point
    is also called through the names other modules imported it under)."""
    found = []
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith("backends.torch"):
            continue
        for attr, value in list(vars(module).items()):
            if id(value) in originals:
                found.append((module, attr, value))
    return found


class Instrumentation:
    """Timed versions of the entry points, installed for the duration of :meth:`installed` (the
    whole measurement: swapping them per step would invalidate the interpreter's method caches
    inside the step). A timed version times only while a step holds the clock (:meth:`step`);
    otherwise it calls through."""

    def __init__(self) -> None:
        self.clock: _Clock | None = None

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            clock = self.clock
            if clock is None or clock.depth:
                return fn(*args, **kwargs)
            clock.depth = 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                clock.inside += time.perf_counter() - start
                clock.depth = 0

        return timed

    @contextmanager
    def installed(self) -> Iterator[Instrumentation]:
        points = entry_points()
        originals = {id(getattr(owner, attr)): getattr(owner, attr) for owner, attr in points}
        targets = [(owner, attr, getattr(owner, attr)) for owner, attr in points if isinstance(owner, type)]
        targets += _bindings(originals)
        for owner, attr, fn in targets:
            setattr(owner, attr, self._wrap(fn))
        try:
            yield self
        finally:
            for owner, attr, fn in targets:
                setattr(owner, attr, fn)

    @contextmanager
    def step(self, problem: Any) -> Iterator[_Clock]:
        """One step's clock; ``problem``'s counters count what is added outside every entry point."""
        clock = self.clock = _Clock()
        counters = problem.counters
        add = counters.add

        def checked_add(kind: str, n: int = 1) -> None:
            if not clock.depth:
                clock.untimed += n
            add(kind, n)

        counters.add = checked_add
        try:
            yield clock
        finally:
            self.clock = None
            del counters.add


class InstrumentedAdapter:
    """An extra lane for ``benchmarks.step_cost.measure``: the adapter's own step with its passes
    timed (:class:`Instrumentation`), keeping each step's time inside them."""

    def __init__(self, adapter: Any, hparams: Any, instrumentation: Instrumentation) -> None:
        self.adapter, self.hparams, self.instrumentation = adapter, hparams, instrumentation
        self.inside: list[float] = []
        self.untimed = 0

    def init(self, problem: Any, hparams: Any) -> Any:
        return self.adapter.init(problem, self.hparams)

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> tuple[Any, Any, dict[str, Any]]:
        with self.instrumentation.step(problem) as clock:
            out = self.adapter.step(problem, params, state, batch)
        self.inside.append(clock.inside)
        self.untimed += clock.untimed
        return out


class Row(NamedTuple):
    problem: str
    adapter: str
    median_s: float
    floor_s: float
    algebra_s: float
    #: The instrumented lane's median step (the same step plus the clocks).
    instrumented_s: float
    passes_in_step_s: float
    untimed: int

    @property
    def rest_s(self) -> float:
        """The instrumented step less its time inside passes (medians of the same lane)."""
        return self.instrumented_s - self.passes_in_step_s


def measure_in_step(problem: str, adapters: list[str], rounds: int = 100, warmup: int = 10) -> list[Row]:
    """The step-cost table of ``adapters`` (torch) on ``problem`` with an instrumented lane each."""
    from harness import registry

    available = registry.adapters("torch")
    instrumentation = Instrumentation()
    lanes = {}
    for name in adapters:
        adapter, _, preset = name.partition(":")
        cls = available[adapter]
        lanes[f"in-step:{name}"] = InstrumentedAdapter(cls(), cls.resolve(None, preset or None), instrumentation)
    with instrumentation.installed():
        measured = measure("torch", problem, adapters, rounds, warmup, extra=dict(lanes))
    rows = []
    for cost in measured.costs:
        lane = lanes[f"in-step:{cost.adapter}"]
        inside = lane.inside[warmup:]
        rows.append(
            Row(
                problem,
                cost.adapter,
                cost.median_s,
                cost.floor_s,
                cost.algebra_s,
                measured.extra.get(f"in-step:{cost.adapter}", float("nan")),
                float(np.median(inside)) if inside else float("nan"),
                lane.untimed,
            )
        )
    return rows


def format_rows(rows: list[Row]) -> str:
    lines = [
        "| problem | adapter | median step | instrumented step | floor (repeated probes) | passes in step "
        "| passes in step / floor | rest (instrumented step − passes) | algebra (lanes) | untimed passes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        algebra = "" if np.isnan(r.algebra_s) else f"{r.algebra_s * 1e3:.3f} ms"
        lines.append(
            f"| {r.problem} | {r.adapter} | {r.median_s * 1e3:.3f} ms | {r.instrumented_s * 1e3:.3f} ms | "
            f"{r.floor_s * 1e3:.3f} ms | "
            f"{r.passes_in_step_s * 1e3:.3f} ms | {r.passes_in_step_s / r.floor_s:.2f} | {r.rest_s * 1e3:.3f} ms | "
            f"{algebra} | {r.untimed} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Time inside the oracle's passes, timed in the torch step itself.")
    measurement_arguments(parser, backend=False)
    parser.add_argument(
        "--adapter", nargs="+", default=["sgd", "adamw", "ef", "ief", "sf", "kfac", "kfac:amortised", "fngd", "adamqlr"]
    )
    args = parser.parse_args()
    set_threads(args.threads)
    rows: list[Row] = []
    for problem in args.problem:
        rows += measure_in_step(problem, args.adapter, args.rounds, args.warmup)
    print(format_rows(rows))


if __name__ == "__main__":
    main()
