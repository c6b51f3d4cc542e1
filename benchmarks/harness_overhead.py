"""Harness overhead: ngbench's run loop with ``sgd`` vs a bare hand-written PyTorch loop.

All loops do the same work on ``digits-mlp`` (float32, batch 32, the same data order and
initial parameters, SGD with momentum 0.9): per step a forward, a backward, a parameter
update and reading the loss. Two bare loops:

* ``bare adapter loop``: the same ``sgd`` adapter step called in a plain ``for`` loop — the
  ratio to it is the harness's own overhead (fences, timing, divergence check, logging);
* ``bare torch loop``: idiomatic ``nn.Module`` + ``torch.optim.SGD`` — the ratio to it is the
  end-to-end cost of using ngbench instead of writing the loop by hand.

Evaluations are excluded (the harness's are untimed by design; the bare loops have none).
Goal (issue 2): overhead <= 5%. asv tracks the ratios; run directly for a table::

    python -m benchmarks.harness_overhead [--steps 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from backends.torch import build_problem, likelihoods
from harness.runner import RunSpec, execute
from suites import get_suite
from suites.spec import batch_indices

SUITE = "digits-mlp"


def bare_loop(steps: int, seed: int = 0) -> float:
    """Wall time of a plain ``nn.Module`` + ``torch.optim.SGD`` loop over the same batches."""
    problem = build_problem(get_suite(SUITE), seed=seed)
    module = problem.model
    data = get_suite(SUITE).data
    x_all = torch.as_tensor(data.x_train, dtype=torch.float32)
    y_all = torch.as_tensor(data.y_train)
    opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.as_tensor(batch_indices(problem.n_train, problem.batch_size, seed, step))
        x, y = x_all[idx], y_all[idx]
        opt.zero_grad(set_to_none=True)
        loss = likelihoods.per_sample_loss("softmax_ce", module(x), y).mean()
        loss.backward()
        opt.step()
        loss.item()
    return time.perf_counter() - start


def bare_adapter_loop(steps: int, seed: int = 0) -> float:
    """Wall time of the ``sgd`` adapter's step in a plain loop (no harness)."""
    from harness.registry import get_adapter

    problem = build_problem(get_suite(SUITE), seed=seed)
    adapter_cls = get_adapter("sgd", "torch")
    adapter = adapter_cls()
    params, state = problem.params0, adapter.init(problem, adapter_cls.resolve())
    start = time.perf_counter()
    for step in range(steps):
        params, state, stats = adapter.step(problem, params, state, problem.device_batch(step))
        float(stats["loss"])
    return time.perf_counter() - start


def harness_loop(steps: int, seed: int = 0) -> float:
    """Wall time of ngbench's training loop (evaluations excluded) for the same run."""
    spec = RunSpec(SUITE, "sgd", seed=seed, steps=steps, device="cpu", stop_at_target=False, eval_every=10**9)
    result = execute(spec)
    assert result.status in ("budget_exhausted", "target_reached"), result.error
    return result.loop_time_s


def measure(steps: int = 1000, repeats: int = 5) -> dict[str, float]:
    """Interleaved repeats; medians of per-round ratios."""
    for fn in (bare_loop, bare_adapter_loop, harness_loop):
        fn(50)  # warm every path
    rounds = []
    for _ in range(repeats):
        rounds.append((bare_loop(steps), bare_adapter_loop(steps), harness_loop(steps)))
    torch_s, adapter_s, harness_s = (np.asarray(col) for col in zip(*rounds))
    over_adapter = harness_s / adapter_s
    return {
        "steps": steps,
        "bare_torch_s_per_step": float(np.median(torch_s)) / steps,
        "bare_adapter_s_per_step": float(np.median(adapter_s)) / steps,
        "harness_s_per_step": float(np.median(harness_s)) / steps,
        "overhead_vs_adapter_loop": float(np.median(over_adapter)),
        "overhead_vs_adapter_loop_min": float(over_adapter.min()),
        "overhead_vs_adapter_loop_max": float(over_adapter.max()),
        "ratio_vs_torch_loop": float(np.median(harness_s / torch_s)),
    }


class HarnessOverhead:
    """asv: the ratio (harness loop time / bare loop time), tracked commit over commit."""

    timeout = 300
    unit = "ratio"

    def setup(self) -> None:
        self.result = measure(steps=500, repeats=3)

    def track_overhead_vs_adapter_loop(self) -> float:
        return self.result["overhead_vs_adapter_loop"]

    def track_ratio_vs_torch_loop(self) -> float:
        return self.result["ratio_vs_torch_loop"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = measure(args.steps, args.repeats)
    print(f"threads={args.threads} steps={out['steps']} repeats={args.repeats}")
    print(f"bare torch loop   {out['bare_torch_s_per_step'] * 1e6:8.1f} µs/step")
    print(f"bare adapter loop {out['bare_adapter_s_per_step'] * 1e6:8.1f} µs/step")
    print(f"harness loop      {out['harness_s_per_step'] * 1e6:8.1f} µs/step")
    print(
        f"harness overhead vs the same adapter in a bare loop: {out['overhead_vs_adapter_loop']:.3f}x "
        f"(min {out['overhead_vs_adapter_loop_min']:.3f}, max {out['overhead_vs_adapter_loop_max']:.3f})"
    )
    print(f"harness loop vs idiomatic torch loop: {out['ratio_vs_torch_loop']:.3f}x")


if __name__ == "__main__":
    main()
