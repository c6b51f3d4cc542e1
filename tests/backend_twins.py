"""Run one adapter with given hyperparameters in both backends and compare (JAX adapter tests).

``tests/test_parity.py`` compares every shared adapter with its defaults on the registered
suites; the JAX adapter tests use :func:`twin_runs` for the variants the defaults do not reach
(presets, estimators, line searches, momentum, conv models), in float64: same initial
parameters, same batches and noise, so both backends must produce the same numbers and passes.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import jax.numpy as jnp
import numpy as np

from backends import jax as jax_backend
from backends import torch as torch_backend
from backends.jax.optimizers import builtin_adapters as jax_adapters
from backends.torch.optimizers import builtin_adapters as torch_adapters
from suites import get_suite
from suites.spec import Suite
from tests.test_jax_oracle import conv_suite


@cache
def twin_problems(suite: str) -> tuple[Any, Any]:
    """``(torch, jax)`` float64 problems of a registered suite or ``test-conv``, seed 0."""
    s: Suite = conv_suite() if suite == "test-conv" else get_suite(suite)
    return (
        torch_backend.build_problem(s, seed=0, dtype="float64", device="cpu"),
        jax_backend.build_problem(s, seed=0, dtype="float64", device="cpu"),
    )


def _scalar(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def run(
    backend: str, method: str, suite: str, hparams: dict[str, Any], steps: int, directions: bool = True
) -> dict[str, Any]:
    """Direction at params0 (fresh state), ``steps`` prepared steps, and the direction after them
    (``directions=False``: the steps only, which saves JAX a compile)."""
    tp, jp = twin_problems(suite)
    problem = tp if backend == "torch" else jp
    cls = (torch_adapters() if backend == "torch" else jax_adapters())[method]
    adapter = cls()
    state = adapter.init(problem, cls.resolve(hparams))
    direction = problem.make_direction(adapter) if directions else None
    step = problem.make_step(adapter)
    params = problem.params0
    out: dict[str, Any] = {"directions": []}
    if direction is not None:
        out["directions"].append(problem.to_numpy(direction(params, state, problem.device_batch(0))))
    params_seq, stats_seq, passes = [], [], []
    for t in range(steps):
        before = problem.counters.snapshot()
        params, state, stats = step(params, state, problem.device_batch(t))
        after = problem.counters.snapshot()
        passes.append({k: after[k] - before[k] for k in after if after[k] != before[k]})
        params_seq.append(problem.to_numpy(params))
        stats_seq.append({k: _scalar(v) for k, v in stats.items()})
    if direction is not None:
        out["directions"].append(problem.to_numpy(direction(params, state, problem.device_batch(steps))))
    out.update(params=params_seq, stats=stats_seq, passes=passes, state=state, step=step)
    return out


def assert_twins_agree(
    method: str, suite: str, hparams: dict[str, Any], steps: int = 5, rtol: float = 1e-8, directions: bool = True
) -> Any:
    """Directions, iterates, statistics and passes per step agree; returns the JAX run."""
    t = run("torch", method, suite, hparams, steps, directions)
    j = run("jax", method, suite, hparams, steps, directions)
    for a, d in zip(j["directions"], t["directions"], strict=True):
        close(a, d, rtol)
    for a, d in zip(j["params"], t["params"], strict=True):
        close(a, d, rtol)
    for js, ts in zip(j["stats"], t["stats"], strict=True):
        assert set(js) == set(ts)
        for name, value in ts.items():
            np.testing.assert_allclose(js[name], value, rtol=rtol, atol=1e-12, err_msg=name)
    assert j["passes"] == t["passes"]
    return j


def close(actual: Any, desired: Any, rtol: float) -> None:
    """Elementwise ``rtol`` with an absolute floor of ``rtol`` times the largest entry."""
    desired = np.asarray(desired, dtype=np.float64)
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(np.asarray(actual), desired, rtol=rtol, atol=rtol * scale)


def float_leaves_dtypes(tree: Any) -> set[Any]:
    import jax

    return {
        x.dtype
        for x in jax.tree_util.tree_leaves(tree)
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jnp.floating)
    }
