"""JAX ``sgd``/``adamw`` against optax and torch.optim; compile time booked apart by the runner."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from backends.jax import build_problem, likelihoods
from backends.jax.optimizers import adamw, sgd
from harness import api
from suites import get_suite

STEPS = 8


def _problem(name: str = "tiny-ce"):  # type: ignore[no-untyped-def]
    return build_problem(get_suite(name), seed=1, dtype="float64")


def _loss_and_grad(p):  # type: ignore[no-untyped-def]
    """The mean batch loss and its gradient by plain ``jax.value_and_grad`` (no oracle)."""

    def loss(flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        return likelihoods.per_sample_loss(p.likelihood, p.model.apply(flat, x), y).mean()

    return jax.jit(jax.value_and_grad(loss))


def _run_adapter(p, adapter_cls: Any, hparams: dict[str, Any]):  # type: ignore[no-untyped-def]
    """``(params_t, loss_t)`` for t = 0..STEPS-1 from the jitted adapter step."""
    adapter = adapter_cls()
    state = adapter.init(p, adapter_cls.resolve(hparams))
    step = p.make_step(adapter)
    params, out = p.params0, []
    for t in range(STEPS):
        params, state, stats = step(params, state, p.device_batch(t))
        out.append((np.asarray(params), float(stats["loss"])))
    return out


def test_adamw_matches_optax_adamw_step_for_step() -> None:
    p = _problem()
    hp = {"lr": 0.02, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "weight_decay": 0.05}
    ours = _run_adapter(p, adamw.ADAPTER, hp)
    tx = optax.adamw(0.02, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.05)
    value_and_grad = _loss_and_grad(p)
    params = p.params0
    state = tx.init(params)
    for t in range(STEPS):
        b = p.device_batch(t)
        loss, g = value_and_grad(params, b.x, b.y)
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(ours[t][0], np.asarray(params), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ours[t][1], float(loss), rtol=1e-12)


def _torch_reference(p, ours: list[tuple[np.ndarray, float]], make_opt: Any) -> None:  # type: ignore[no-untyped-def]
    """Feed ``torch.optim`` the gradients at our iterates and compare its iterates to ours."""
    value_and_grad = _loss_and_grad(p)
    theta = torch.nn.Parameter(torch.tensor(np.array(p.params0)))
    opt = make_opt([theta])
    params = p.params0
    for t in range(STEPS):
        b = p.device_batch(t)
        _, g = value_and_grad(params, b.x, b.y)
        theta.grad = torch.tensor(np.array(g))
        opt.step()
        np.testing.assert_allclose(ours[t][0], theta.detach().numpy(), rtol=1e-12, atol=1e-15)
        params = jnp.asarray(ours[t][0])


@pytest.mark.parametrize(
    ("momentum", "nesterov", "weight_decay"),
    [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0), (0.5, False, 1e-2), (0.8, True, 1e-3), (0.0, False, 1e-2)],
)
def test_sgd_has_torch_optim_sgd_semantics(momentum: float, nesterov: bool, weight_decay: float) -> None:
    """First step (buffer = d_1), heavy ball, Nesterov and coupled L2 as ``torch.optim.SGD``."""
    p = _problem("tiny-mse")
    hp = {"lr": 0.05, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
    ours = _run_adapter(p, sgd.ADAPTER, hp)
    _torch_reference(
        p,
        ours,
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay),
    )


def test_adamw_has_torch_optim_adamw_semantics() -> None:
    p = _problem()
    hp = {"lr": 0.02, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "weight_decay": 0.05}
    ours = _run_adapter(p, adamw.ADAPTER, hp)
    _torch_reference(p, ours, lambda ps: torch.optim.AdamW(ps, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05))


def test_directions_are_the_gradient_and_the_adam_direction() -> None:
    p = _problem()
    b = p.device_batch(5)
    _, g = _loss_and_grad(p)(p.params0, b.x, b.y)
    d_sgd = api.direction("tiny-ce", "sgd", backend="jax", seed=1, step=5, dtype="float64")
    np.testing.assert_allclose(d_sgd, np.asarray(g), rtol=1e-12, atol=1e-15)

    adapter = adamw.ADAPTER()
    hp = adamw.ADAPTER.resolve({"b1": 0.8, "b2": 0.99, "eps": 1e-6})
    state = adapter.init(p, hp)
    step, direction = p.make_step(adapter), p.make_direction(adapter)
    params = p.params0
    for t in range(3):
        params, state, _ = step(params, state, p.device_batch(t))
    mu, nu = state.opt_state[0].mu, state.opt_state[0].nu
    _, g = _loss_and_grad(p)(params, b.x, b.y)
    m_hat = (0.8 * mu + 0.2 * g) / (1 - 0.8**4)
    v_hat = (0.99 * nu + 0.01 * g * g) / (1 - 0.99**4)
    expected = m_hat / (jnp.sqrt(v_hat) + 1e-6)
    np.testing.assert_allclose(direction(params, state, b), expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(adapter.direction(p, params, state, b), expected, rtol=1e-10, atol=1e-14)
    assert int(state.opt_state[0].count) == 3  # direction did not advance the moments
    # A fresh state: m^ = g and v^ = g^2, so the direction is g / (|g| + eps).
    fresh = api.direction("tiny-ce", "adamw", backend="jax", seed=1, step=5, dtype="float64", hparams={"eps": 1e-6})
    g0 = _loss_and_grad(p)(p.params0, b.x, b.y)[1]
    np.testing.assert_allclose(fresh, np.asarray(g0 / (jnp.abs(g0) + 1e-6)), rtol=1e-10, atol=1e-14)


def test_api_run_books_compile_time_apart_and_counts_passes() -> None:
    r = api.run("digits-mlp", "sgd", backend="jax", steps=30, device="cpu", eval_every=10)
    assert r.status == "budget_exhausted", r.error
    assert r.steps == 30 and r.device == "cpu:0" and r.memory_kind == "cpu_process_peak_rss"
    assert r.step_time_median_s is not None and r.step_time_median_s > 0
    # The first call traces and compiles (hundreds of ms); steady steps are sub-millisecond.
    assert r.compile_time_s > 20 * r.step_time_median_s
    assert r.passes_per_step == {"forward": 1.0, "backward": 1.0, "jvp": 0.0, "vjp": 0.0, "per_sample": 0.0}
    steps, times, losses = r.series("train_loss")
    assert list(steps) == [0, 10, 20, 30] and losses[-1] < losses[0]
    # The time axis books the compiling step as one median step, not as its wall time.
    assert times[-1] == pytest.approx(r.train_time_s) and r.train_time_s < r.compile_time_s


def test_api_run_reports_errors_of_jax_adapters_as_results() -> None:
    r = api.run("tiny-mse", "adamw", backend="jax", steps=5, device="cpu", hparams={"lr": 1e6})
    assert r.status == "diverged" and "loss" in (r.error or "")
