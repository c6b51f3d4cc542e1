"""Parity of the torch and JAX backends: same parameters and batch, same numbers (float64).

Adapters are compared automatically for every name available in BOTH backends
(``harness.registry.adapters``), so each method is covered as soon as its JAX twin exists:
direction and first update to rtol 1e-6, 20-step loss trajectories to 1e-5, passes per step
exactly. The oracle primitives, the models (every layer kind), the initial losses and the
evaluation metrics are compared too. Problems and runs are built once per process.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch

from backends import jax as jax_backend
from backends import torch as torch_backend
from backends.methods import BUILTIN_METHODS
from harness import api, registry
from suites import get_suite
from tests.test_jax_oracle import conv_suite

SUITES = ("tiny-ce", "tiny-mse", "digits-mlp", "diabetes-mlp")
TRAJECTORY_STEPS = 20
DIRECTION_RTOL = 1e-6
TRAJECTORY_RTOL = 1e-5
ORACLE_RTOL = 1e-10


def shared_adapters() -> list[str]:
    """Adapter names available in both backends that claim the same update on both (a row that
    wraps two different libraries declares ``cross_backend_parity=False``), built-ins first."""
    torch_adapters, jax_adapters = registry.adapters("torch"), registry.adapters("jax")
    names = {
        n
        for n in set(torch_adapters) & set(jax_adapters)
        if torch_adapters[n].capabilities.cross_backend_parity and jax_adapters[n].capabilities.cross_backend_parity
    }
    order = {name: i for i, name in enumerate(BUILTIN_METHODS)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


ADAPTERS = shared_adapters()


def test_every_builtin_method_is_checked_for_parity() -> None:
    assert set(BUILTIN_METHODS) <= set(ADAPTERS)


@cache
def problems(suite: str, dtype: str) -> tuple[Any, Any]:
    s = conv_suite() if suite == "test-conv" else get_suite(suite)
    return (
        torch_backend.build_problem(s, seed=0, dtype=dtype, device="cpu"),
        jax_backend.build_problem(s, seed=0, dtype=dtype, device="cpu"),
    )


def _scalar(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@cache
def trajectory(backend: str, adapter_name: str, suite: str) -> dict[str, Any]:
    """Direction at (params0, batch 0), then TRAJECTORY_STEPS prepared steps on batches 0, 1, ..."""
    problem = problems(suite, "float64")[0 if backend == "torch" else 1]
    cls = registry.get_adapter(adapter_name, backend)
    adapter = cls()
    state = adapter.init(problem, cls.resolve())
    params = problem.params0
    if backend == "jax":
        direction = problem.make_direction(adapter)(params, state, problem.device_batch(0))
    else:
        direction = adapter.direction(problem, params, state, problem.device_batch(0))
    step = problem.make_step(adapter)
    losses, passes, first_stats, first_update = [], [], {}, None
    for t in range(TRAJECTORY_STEPS):
        before = problem.counters.snapshot()
        new, state, stats = step(params, state, problem.device_batch(t))
        after = problem.counters.snapshot()
        passes.append({k: after[k] - before[k] for k in after})
        losses.append(_scalar(stats["loss"]))
        if t == 0:
            first_update = problem.to_numpy(new) - problem.to_numpy(params)
            first_stats = {k: _scalar(v) for k, v in stats.items()}
        params = new
    return {
        "direction": np.asarray(problem.to_numpy(direction)),
        "first_update": first_update,
        "first_stats": first_stats,
        "losses": np.asarray(losses),
        "passes": passes,
    }


def assert_vectors_close(actual: np.ndarray, desired: np.ndarray, rtol: float) -> None:
    """Elementwise ``rtol``, with an absolute floor of ``rtol`` times the largest entry."""
    desired = np.asarray(desired, dtype=np.float64)
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


cases = pytest.mark.parametrize(("adapter", "suite"), [(a, s) for a in ADAPTERS for s in SUITES])


def test_sgd_and_adamw_are_shared() -> None:
    assert {"sgd", "adamw"} <= set(ADAPTERS)


@cases
def test_directions_agree(adapter: str, suite: str) -> None:
    t, j = trajectory("torch", adapter, suite), trajectory("jax", adapter, suite)
    assert j["direction"].shape == t["direction"].shape
    assert np.all(np.isfinite(t["direction"]))
    assert_vectors_close(j["direction"], t["direction"], DIRECTION_RTOL)


@cases
def test_first_updates_and_stats_agree(adapter: str, suite: str) -> None:
    t, j = trajectory("torch", adapter, suite), trajectory("jax", adapter, suite)
    assert np.any(t["first_update"] != 0)
    assert_vectors_close(j["first_update"], t["first_update"], DIRECTION_RTOL)
    assert set(j["first_stats"]) == set(t["first_stats"])
    for name, value in t["first_stats"].items():
        # A solve's residual is rounding noise (~1e-16 to 1e-13): compared in absolute terms.
        atol = 1e-12 if name.endswith("solve_residual") else 0.0
        np.testing.assert_allclose(j["first_stats"][name], value, rtol=DIRECTION_RTOL, atol=atol, err_msg=name)


@cases
def test_loss_trajectories_agree(adapter: str, suite: str) -> None:
    t, j = trajectory("torch", adapter, suite), trajectory("jax", adapter, suite)
    assert np.all(np.isfinite(t["losses"]))
    np.testing.assert_allclose(j["losses"], t["losses"], rtol=TRAJECTORY_RTOL, atol=1e-8)


@cases
def test_passes_per_step_agree(adapter: str, suite: str) -> None:
    t, j = trajectory("torch", adapter, suite), trajectory("jax", adapter, suite)
    assert j["passes"] == t["passes"]


# --------------------------------------------------------------------------- oracle and models


def _torch_primitives(p: Any, v: np.ndarray, u: np.ndarray, w: np.ndarray, dense: bool) -> dict[str, Any]:
    b = p.device_batch(0)
    o = p.oracle(p.params0, b, taps=True)
    vt, ut, wt = (torch.as_tensor(a) for a in (v, u, w))
    out = {
        "loss": o.loss(),
        "logits": o.logits,
        "grad": o.grad(),
        "J": o.per_sample_grads(),
        "a": o.tap_inputs(),
        "e": o.tap_grads(),
        "e_sampled": o.tap_grads_for(o.sampled_logit_grads(1)[0]),
        "jvp": o.jvp(vt),
        "vjp": o.vjp(ut),
        "ggn_vp": o.ggn_vp(vt),
        "ggn_quad": o.ggn_quad(vt),
        "weighted_grad": o.weighted_grad(wt),
        "targets": o.sample_targets(4),
        "sampled_r": o.sampled_logit_grads(2),
    }
    if dense:
        out["Jz"] = o.output_jacobian()
    return {k: [p.to_numpy(x) for x in val] if isinstance(val, list) else p.to_numpy(val) for k, val in out.items()}


def _jax_primitives(p: Any, v: np.ndarray, u: np.ndarray, w: np.ndarray, dense: bool) -> dict[str, Any]:
    def primitives(params: Any, batch: Any, v: Any, u: Any, w: Any) -> dict[str, Any]:
        o = p.oracle(params, batch, taps=True)
        out = {
            "loss": o.loss(),
            "logits": o.logits,
            "grad": o.grad(),
            "J": o.per_sample_grads(),
            "a": o.tap_inputs(),
            "e": o.tap_grads(),
            "e_sampled": o.tap_grads_for(o.sampled_logit_grads(1)[0]),
            "jvp": o.jvp(v),
            "vjp": o.vjp(u),
            "ggn_vp": o.ggn_vp(v),
            "ggn_quad": o.ggn_quad(v),
            "weighted_grad": o.weighted_grad(w),
            "targets": o.sample_targets(4),
            "sampled_r": o.sampled_logit_grads(2),
        }
        if dense:
            out["Jz"] = o.output_jacobian()
        return out

    out = p.jit(primitives)(p.params0, p.device_batch(0), *(p.from_numpy(a) for a in (v, u, w)))
    return {k: [p.to_numpy(x) for x in val] if isinstance(val, list) else p.to_numpy(val) for k, val in out.items()}


@pytest.mark.parametrize("suite", [*SUITES, "test-conv"])
def test_oracle_primitives_agree(suite: str, rng: np.random.Generator) -> None:
    tp, jp = problems(suite, "float64")
    B, C, P = tp.batch_size, tp.num_outputs, tp.num_params
    v, u, w = rng.normal(size=P), rng.normal(size=(B, C)), rng.normal(size=B)
    dense = P * B * C < 100_000
    before_t, before_j = tp.counters.snapshot(), jp.counters.snapshot()
    t = _torch_primitives(tp, v, u, w, dense)
    j = _jax_primitives(jp, v, u, w, dense)
    for name, desired in t.items():
        actual = j[name]
        pairs = zip(actual, desired, strict=True) if isinstance(desired, list) else [(actual, desired)]
        for a, d in pairs:
            assert a.shape == d.shape, name
            if name == "targets" and tp.likelihood == "softmax_ce":
                np.testing.assert_array_equal(a, d, err_msg=name)
            else:
                scale = float(np.max(np.abs(d))) if d.size else 0.0
                np.testing.assert_allclose(a, d, rtol=ORACLE_RTOL, atol=1e-13 * max(scale, 1.0), err_msg=name)
    after_t, after_j = tp.counters.snapshot(), jp.counters.snapshot()
    assert {k: after_j[k] - before_j[k] for k in after_j} == {k: after_t[k] - before_t[k] for k in after_t}


EVAL_CASES = [*((s, "float64") for s in (*SUITES, "test-conv")), ("tiny-mse", "float32"), ("digits-mlp", "float32")]


@pytest.mark.parametrize(("suite", "dtype"), EVAL_CASES)
def test_initial_losses_and_evaluation_metrics_agree(suite: str, dtype: str) -> None:
    tp, jp = problems(suite, dtype)
    rtol = ORACLE_RTOL if dtype == "float64" else 1e-5
    np.testing.assert_array_equal(jp.to_numpy(jp.params0), tp.to_numpy(tp.params0))
    shift = np.random.default_rng(3).normal(scale=0.3, size=tp.num_params)
    for flat in (tp.to_numpy(tp.params0), tp.to_numpy(tp.params0) + shift):
        t_metrics = tp.evaluate(tp.from_numpy(flat))
        j_metrics = jp.evaluate(jp.from_numpy(flat))
        assert set(j_metrics) == set(t_metrics)
        for name, value in t_metrics.items():
            np.testing.assert_allclose(j_metrics[name], value, rtol=rtol, err_msg=name)
    jax_loss = jp.jit(lambda params, batch: jp.oracle(params, batch).loss())(jp.params0, jp.device_batch(0))
    np.testing.assert_allclose(float(jax_loss), float(tp.oracle(tp.params0, tp.device_batch(0)).loss()), rtol=rtol)


def test_batches_agree() -> None:
    tp, jp = problems("digits-mlp", "float64")
    for step in (0, 7, 200):
        t, j = tp.device_batch(step), jp.device_batch(step)
        for a, d in zip(j, t, strict=True):
            np.testing.assert_array_equal(np.asarray(a), d.numpy())
        for a, d in zip(jp.batch(step), tp.batch(step), strict=True):
            np.testing.assert_array_equal(a, d)


def test_api_runs_agree() -> None:
    """The unchanged runner gives the same metric series, statuses and pass counts."""
    runs = {
        b: api.run("tiny-ce", "sgd", backend=b, steps=20, dtype="float64", device="cpu", eval_every=5)
        for b in ("torch", "jax")
    }
    t, j = runs["torch"], runs["jax"]
    assert (t.status, t.steps) == (j.status, j.steps)
    assert j.passes_per_step == t.passes_per_step
    for name in ("train_loss", "val_loss", "val_accuracy", "train_loss_batch"):
        ts, _, tv = t.series(name)
        js, _, jv = j.series(name)
        np.testing.assert_array_equal(js, ts)
        np.testing.assert_allclose(jv, tv, rtol=1e-10, err_msg=name)
