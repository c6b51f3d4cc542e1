"""EGN on JAX: the exact damped natural gradient against a dense JAX reference, the torch twin's
numbers for the variants the default parity test does not reach (Armijo line search, momentum,
LM damping, the dense Gram, the jittered factor, conv layers), and the jitted line search: one
compile whatever the number of backtracks, one forward booked per trial."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backends.jax import build_problem, likelihoods
from backends.jax.optimizers.egn import EGN, initial_step_size
from backends.methods import egn
from suites import get_suite
from tests.backend_twins import assert_twins_agree, close, float_leaves_dtypes
from tests.test_jax_oracle import dense_q


@pytest.fixture(scope="module")
def tiny_problems() -> dict[str, object]:
    return {name: build_problem(get_suite(name), seed=3, dtype="float64") for name in ("tiny-ce", "tiny-mse")}


def _dense_damped_ng(p, batch, lam: float, jitter: float = 0.0) -> jax.Array:  # type: ignore[no-untyped-def]
    """``(Jz^T (Q + jitter I) Jz / B + lam I)^{-1} g`` from the dense output Jacobian."""

    @jax.jit
    def solve(params: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        Jz = jax.jacrev(lambda f: p.model.apply(f, x))(params)
        z = p.model.apply(params, x)
        Q = dense_q(p.likelihood, z) + jitter * jnp.eye(z.shape[-1])
        G = jnp.einsum("bcp,bcd,bdq->pq", Jz, Q, Jz) / Jz.shape[0]
        g = jax.grad(lambda f: likelihoods.per_sample_loss(p.likelihood, p.model.apply(f, x), y).mean())(params)
        return jnp.linalg.solve(G + lam * jnp.eye(g.shape[0]), g)

    return solve(p.params0, batch.x, batch.y)


@pytest.mark.parametrize("gram", ["taps", "dense"])
@pytest.mark.parametrize("suite", ["tiny-ce", "tiny-mse"])
def test_direction_is_the_exact_damped_natural_gradient(tiny_problems, suite: str, gram: str) -> None:  # type: ignore[no-untyped-def]
    p = tiny_problems[suite]
    b = p.device_batch(0)
    adapter = EGN()
    d = p.make_direction(adapter)(p.params0, adapter.init(p, EGN.resolve({"damping": 0.05, "gram": gram})), b)
    close(d, _dense_damped_ng(p, b, 0.05), 1e-9)


def test_q_jitter_solves_with_the_jittered_curvature(tiny_problems) -> None:  # type: ignore[no-untyped-def]
    p = tiny_problems["tiny-ce"]
    b = p.device_batch(1)
    adapter = EGN()
    d = p.make_direction(adapter)(p.params0, adapter.init(p, EGN.resolve({"damping": 0.1, "q_jitter": 1e-3})), b)
    close(d, _dense_damped_ng(p, b, 0.1, jitter=1e-3), 1e-9)


def test_traced_initial_step_size_equals_the_card() -> None:
    hp = EGN.resolve({"lr": 2.0, "ls_increase": 1.5})
    for previous in (0.1, 1.0, 1.5, 3.0):
        assert float(initial_step_size(hp, jnp.asarray(previous))) == egn.initial_step_size(hp, previous)


@pytest.mark.parametrize(
    ("suite", "hparams"),
    [
        # Backtracks on the first steps, then the reset rule min(1.5 alpha, lr) takes over.
        ("tiny-ce", {"line_search": True, "lr": 5.0, "damping": 0.01}),
        ("tiny-mse", {"line_search": True, "lr": 1e6, "ls_max_steps": 3, "momentum": 0.5, "adaptive_damping": True}),
        ("tiny-ce", {"momentum": 0.7, "adaptive_damping": True, "lr": 0.5, "gram": "dense"}),
        ("tiny-ce", {"adaptive_damping": True, "lr": 200.0, "q_jitter": 1e-3, "damping_increase": 1.5}),
        ("digits-mlp", {"line_search": True, "lr": 1.0, "adaptive_damping": True}),
    ],
)
def test_variants_match_the_torch_adapter(suite: str, hparams: dict[str, object]) -> None:
    # Directions only where the solve changes (momentum, the Gram, the factor).
    directions = any(k in hparams for k in ("momentum", "gram", "q_jitter"))
    j = assert_twins_agree("egn", suite, hparams, steps=4, directions=directions)
    assert j["step"].compile_count == 1


def test_conv_models_use_the_dense_jacobian_and_match_the_torch_adapter() -> None:
    j = assert_twins_agree("egn", "test-conv", {"damping": 0.2, "adaptive_damping": True}, steps=2)
    assert j["passes"][0] == {"forward": 3, "backward": 10}  # dense Jacobian: its forward, C = 10 reverse passes


def test_line_search_compiles_once_and_books_one_forward_per_trial(tiny_problems) -> None:  # type: ignore[no-untyped-def]
    """The backtracking count changes from step to step inside one executable; each trial's
    forward is booked (1 forward + C backward passes for the solve, plus the trials)."""
    p = tiny_problems["tiny-ce"]
    adapter = EGN()
    step = p.make_step(adapter)
    params, state = p.params0, adapter.init(p, EGN.resolve({"line_search": True, "lr": 5.0, "damping": 0.01}))
    trials = []
    for t in range(4):
        before = p.counters.snapshot()
        params, state, stats = step(params, state, p.device_batch(t))
        after = p.counters.snapshot()
        k = int(stats["line_search_steps"])
        trials.append(k)
        assert {n: after[n] - before[n] for n in after if after[n] != before[n]} == {"forward": 2 + k, "backward": 3}
        assert float(state.step_size) == pytest.approx(float(stats["lr"]))
    assert len(set(trials)) > 1 and step.compile_count == 1 and step.traces == 1


def test_float32_state_stays_float32() -> None:
    p = build_problem(get_suite("tiny-mse"), seed=0, dtype="float32")
    adapter = EGN()
    hp = EGN.resolve({"line_search": True, "momentum": 0.5, "adaptive_damping": True})
    state = adapter.init(p, hp)
    params = p.params0
    step = p.make_step(adapter)
    for t in range(2):
        params, state, stats = step(params, state, p.device_batch(t))
    assert float_leaves_dtypes((params, state, stats)) == {np.dtype(np.float32)}
    assert np.all(np.isfinite(np.asarray(params)))
