"""What a pass costs repeated against what it costs after a different pass.

The step-cost table's floor prices each pass kind with *probes* that ask the oracle the same
question step after step (``benchmarks.pass_costs``). Inside an adapter's step no pass repeats
its predecessor: a forward follows the previous step's update, a JVP follows a backward, a
trial forward follows the linear algebra. This benchmark measures both contexts in one
process, round-robin in turns of ``block`` steps as the step-cost table does:

- ``repeated``: one lane per question (forward, gradient, JVP, VJP), each step asking its
  lane's question, as the floor's probes do;
- ``after another``: one more lane whose every step asks a question drawn at random (seeded)
  among those different from its previous step's.

Each question's median in each context, and the per-kind costs both give by the floor's least
squares (``benchmarks.pass_costs.pass_costs``). A ratio above 1 is what the floor leaves out
for a step whose passes follow one another (docs/measurement.md, "What a floor of probes leaves
out")::

    OMP_NUM_THREADS=1 python -m benchmarks.pass_context --threads 1 [--backend torch jax]
                                                        [--problem digits-mlp digits-wide]
                                                        [--rounds 100] [--warmup 10]
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

import numpy as np

from benchmarks import pass_costs
from benchmarks.step_cost import (
    BLOCK,
    PROBLEMS,
    _shuffled,
    _turns,
    measured_backends,
    measurement_arguments,
    passes_since,
    set_threads,
)
from harness.timing import timed_step

#: The questions mixed. Per-sample gradients are left out: their ``B x P`` array (3.3 MB on
#: digits-mlp) is larger than a core's L2 cache on the machine measured (2 MiB), so a pass after
#: them would measure a flushed cache, which no step of a method without per-sample gradients sees.
QUESTIONS: tuple[str, ...] = ("forward", "gradient", "jvp", "vjp")


class Context(NamedTuple):
    """Median step per question (``repeated``, ``after_another``) and the per-kind costs of each."""

    repeated: dict[str, float]
    after_another: dict[str, float]
    kinds_repeated: dict[str, float]
    kinds_after_another: dict[str, float]


def _next_question(rng: np.random.Generator, questions: list[str], previous: str | None) -> str:
    """A question drawn among ``questions`` other than ``previous``."""
    choices = [q for q in questions if q != previous]
    return choices[int(rng.integers(len(choices)))]


def measure(
    backend: str,
    problem: str,
    rounds: int = 100,
    warmup: int = 10,
    block: int = BLOCK,
    questions: tuple[str, ...] = QUESTIONS,
    seed: int = 0,
) -> Context:
    """Both contexts of every question in ``questions`` on (``backend``, ``problem``).

    The mixed lane has its own problem and one prepared step per question (so JAX compiles each
    once); ``rounds`` timed steps are drawn for it per question on average, after ``warmup``
    untimed steps of every question."""
    from harness import registry

    module = registry.backend_module(backend)
    suite = PROBLEMS[problem]()

    def build() -> Any:
        return module.build_problem(suite, seed=0, dtype="float32", device="cpu")

    lanes: dict[str, dict[str, Any]] = {}
    for q in questions:
        prob = build()
        lanes[q] = {"problem": prob, "steps": {q: prob.make_step(pass_costs.Probe(q))}, "times": {q: []}}
    mixed = build()
    lanes["mixed"] = {
        "problem": mixed,
        "steps": {q: mixed.make_step(pass_costs.Probe(q)) for q in questions},
        "times": {q: [] for q in questions},
    }
    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, float]] = {}
    for name, lane in lanes.items():  # warm-up (compilation): every prepared step, untimed
        prob = lane["problem"]
        for q, step in lane["steps"].items():
            before = prob.counters.snapshot()
            for i in range(warmup):
                timed_step(prob, step, prob.params0, None, prob.device_batch(i))
            if name != "mixed":
                counts[q] = passes_since(prob, before, warmup)
    previous: str | None = None
    order = list(lanes.items())
    for index, turn in enumerate(_turns(rounds, block)):
        for name, lane in _shuffled(order, index):
            prob = lane["problem"]
            for i in turn:  # the mixed lane takes one step per question for each step of the others
                for _ in range(len(questions) if name == "mixed" else 1):
                    if name == "mixed":
                        q = previous = _next_question(rng, list(questions), previous)
                    else:
                        q = name
                    batch = prob.device_batch(warmup + i)
                    *_, seconds = timed_step(prob, lane["steps"][q], prob.params0, None, batch)
                    lane["times"][q].append(seconds)
    repeated = {q: float(np.median(lanes[q]["times"][q])) for q in questions}
    after = {q: float(np.median(times)) for q, times in lanes["mixed"]["times"].items() if times}
    names = {f"probe:{q}": q for q in questions}
    by_probe = {p: counts[q] for p, q in names.items()}
    return Context(
        repeated,
        after,
        pass_costs.pass_costs(by_probe, {p: repeated[q] for p, q in names.items()}),
        pass_costs.pass_costs(by_probe, {p: after[q] for p, q in names.items() if q in after}),
    )


def format_rows(backend: str, problem: str, context: Context) -> list[str]:
    lines = []
    for q, alone in context.repeated.items():
        other = context.after_another.get(q, float("nan"))
        lines.append(
            f"| {backend} | {problem} | question: {q} | {alone * 1e3:.3f} ms | {other * 1e3:.3f} ms | "
            f"{other / alone:.2f} |"
        )
    for kind, alone in context.kinds_repeated.items():
        other = context.kinds_after_another.get(kind, float("nan"))
        ratio = other / alone if alone > 0 else float("nan")
        lines.append(
            f"| {backend} | {problem} | pass: {kind} | {alone * 1e3:.3f} ms | {other * 1e3:.3f} ms | {ratio:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="A pass's cost repeated against after a different pass.")
    measurement_arguments(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    backends = measured_backends(args.backend)
    print("| backend | problem | what | repeated | after a different pass | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for backend in backends:
        for problem in args.problem:
            print("\n".join(format_rows(backend, problem, measure(backend, problem, args.rounds, args.warmup))))


if __name__ == "__main__":
    main()
