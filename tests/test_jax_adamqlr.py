"""AdamQLR on JAX: the step size as the minimiser of the dense damped quadratic model (GGN and
Hessian, dense JAX references), the Adam direction as optax's without advancing the moments,
the torch twin's numbers for the variants the default parity test does not reach, one compile."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from backends import damping as lm
from backends.jax import build_problem, likelihoods
from backends.jax.optimizers.adamqlr import AdamQLR
from backends.methods import adamqlr
from suites import get_suite
from tests.backend_twins import assert_twins_agree, close, float_leaves_dtypes
from tests.test_jax_oracle import dense_q


@pytest.mark.parametrize(
    ("suite", "hparams"),
    [
        ("tiny-ce", {"curvature": "hessian", "saddle_free": True}),
        ("tiny-mse", {"lr_clipping": 0.01, "adaptive_damping": False}),
        ("digits-mlp", dict(AdamQLR.presets["tuned"])),
    ],
)
def test_variants_match_the_torch_adapter(suite: str, hparams: dict[str, object]) -> None:
    j = assert_twins_agree("adamqlr", suite, hparams, steps=5, directions=False)  # the direction is Adam's
    assert j["step"].compile_count == 1


@pytest.mark.parametrize("curvature", ["fisher", "hessian"])
def test_step_minimises_the_dense_damped_quadratic_model(curvature: str) -> None:
    p = build_problem(get_suite("tiny-ce"), seed=3, dtype="float64")
    adapter = AdamQLR()
    step, direction = p.make_step(adapter), p.make_direction(adapter)
    state = adapter.init(p, AdamQLR.resolve({"damping": 0.3, "curvature": curvature}))
    # A step from a state with history, so that d is not just g / (|g| + eps).
    params, state, _ = step(p.params0, state, p.device_batch(5))
    lam = float(state.damping)
    b = p.device_batch(0)
    d = direction(params, state, b)
    new, new_state, stats = step(params, state, b)

    def loss(f: jax.Array) -> jax.Array:
        return likelihoods.per_sample_loss(p.likelihood, p.model.apply(f, b.x), b.y).mean()

    @jax.jit
    def curvature_matrix(f: jax.Array) -> jax.Array:
        if curvature == "hessian":
            return jax.hessian(loss)(f)
        Jz = jax.jacrev(lambda q: p.model.apply(q, b.x))(f)
        return jnp.einsum("bcp,bcd,bdq->pq", Jz, dense_q(p.likelihood, p.model.apply(f, b.x)), Jz) / Jz.shape[0]

    C = curvature_matrix(params)
    g = jax.jit(jax.grad(loss))(params)
    damped = float(d @ C @ d + lam * d @ d)
    s = -float(g @ d) / damped
    assert float(stats["lr"]) == pytest.approx(-s, rel=1e-9)
    assert float(stats["curvature"]) == pytest.approx(float(d @ C @ d), rel=1e-9)
    close(new, params + s * d, 1e-12)
    model_change = s * float(g @ d) + 0.5 * s * s * damped
    assert float(stats["model_change"]) == pytest.approx(model_change, rel=1e-9)
    rho = (float(jax.jit(loss)(new)) - float(jax.jit(loss)(params))) / model_change
    assert float(stats["rho"]) == pytest.approx(rho, rel=1e-7)
    expected = lm.lm_update(lam, rho, adamqlr.lm_rule(state.hparams))
    assert float(new_state.damping) == pytest.approx(expected, rel=1e-12)


def test_direction_is_optax_adam_and_does_not_advance_the_moments() -> None:
    p = build_problem(get_suite("tiny-mse"), seed=3, dtype="float64")
    adapter = AdamQLR()
    hp = AdamQLR.resolve({"b1": 0.8, "b2": 0.95, "eps": 1e-3})
    state = adapter.init(p, hp)
    step, direction = p.make_step(adapter), p.make_direction(adapter)
    params = p.params0
    tx = optax.scale_by_adam(b1=0.8, b2=0.95, eps=1e-3)
    reference = tx.init(params)
    grad = jax.jit(jax.grad(lambda f, x, y: likelihoods.per_sample_loss(p.likelihood, p.model.apply(f, x), y).mean()))
    for t in range(3):
        b = p.device_batch(t)
        d = direction(params, state, b)
        expected, reference = tx.update(grad(params, b.x, b.y), reference)
        close(d, expected, 1e-12)
        assert int(state.adam.count) == t  # direction left the moments alone
        before = p.counters.snapshot()
        new, state, stats = step(params, state, b)
        after = p.counters.snapshot()
        assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {
            "forward": 2,
            "backward": 1,
            "jvp": 1,
        }
        close(new, params - float(stats["lr"]) * d, 1e-12)  # along the direction, lr = -s
        params = new
    assert step.compile_count == 1


def test_float32_state_stays_float32() -> None:
    p = build_problem(get_suite("tiny-ce"), seed=0, dtype="float32")
    adapter = AdamQLR()
    state = adapter.init(p, AdamQLR.resolve({"curvature": "hessian", "lr_clipping": 0.1}))
    step = p.make_step(adapter)
    params = p.params0
    for t in range(2):
        params, state, stats = step(params, state, p.device_batch(t))
    assert float_leaves_dtypes((params, state, stats)) == {np.dtype(np.float32)}
