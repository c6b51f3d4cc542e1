"""K-FAC on JAX: the torch twin's numbers for the variants the default parity test does not reach
(estimators, damping forms, presets, fixed lr/momentum with LM steps, conv layers), dense
references in JAX (known-exact case, densified damped preconditioner), and the jitted step:
one compile for every schedule, passes booked only for the branches that run, cached inverses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backends.jax import build_problem, likelihoods
from backends.jax import kfac_factors as kf
from backends.jax.optimizers import kfac as jkfac
from backends.jax.optimizers.kfac import KFAC, batch_factors
from backends.methods import kfac
from suites import get_suite
from suites.layers import Linear, ModelSpec
from tests.backend_twins import assert_twins_agree, close, float_leaves_dtypes
from tests.second_order_dense import custom_problem
from tests.test_jax_oracle import dense_q

# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "overrides",
    [
        {"ema_mode": "paper"},
        {"ema_mode": "normalized"},
        {"ema_mode": "normalized", "curvature_ema": 0.0},
        {"inverse_update_period": 7, "inverse_warmup_steps": 3},
        {"inverse_update_period": 1, "inverse_warmup_steps": 0},
    ],
)
def test_traced_schedules_equal_the_cards(overrides: dict[str, object]) -> None:
    hp = KFAC.resolve(overrides)
    steps = jnp.arange(60)
    weights = np.asarray(jax.vmap(lambda t: jkfac.ema_weight(t + 1, hp))(steps))
    np.testing.assert_allclose(weights, [kfac.ema_weight(int(t) + 1, hp) for t in steps], rtol=1e-14)
    refresh = np.asarray(jax.vmap(lambda t: jkfac.refresh_inverses(t, hp))(steps))
    assert refresh.tolist() == [kfac.refresh_inverses(int(t), hp) for t in steps]


def test_amortised_statistics_schedule_on_a_traced_counter() -> None:
    """Statistics steps and estimate counts are the same arithmetic on ints and traced counters."""
    hp = KFAC.resolve({"stats_update_period": 4})
    steps = jnp.arange(13)
    update = np.asarray(jax.vmap(lambda t: kfac.update_stats(t, hp))(steps))
    assert update.tolist() == [t % 4 == 0 for t in range(13)]
    counts = np.asarray(jax.vmap(lambda t: kfac.estimate_count(t, hp))(steps))
    assert [int(c) for c, u in zip(counts, update, strict=True) if u] == [1, 2, 3, 4]
    assert kfac.estimate_count(7, KFAC.resolve()) == 8  # every step: k = t + 1, the paper's


def test_amortised_preset_matches_the_torch_adapter_across_skipped_statistics() -> None:
    """The ``amortised`` preset (statistics every 10 steps, fixed lr and momentum) with a 3-step
    statistics period and a 4-step inverse period, so that 7 steps hold skipped statistics
    steps, statistics steps t = 3, 6, an inverse refresh on a skipped step (t = 4) and the LM
    step t = 4: same iterates, statistics and passes per step (the sampled-label backward only
    on t = 0, 3, 6) in float64."""
    hparams = {**KFAC.presets["amortised"], "stats_update_period": 3, "inverse_update_period": 4}
    j = assert_twins_agree("kfac", "tiny-ce", hparams, steps=7, directions=False)
    assert j["step"].compile_count == 1
    backward = [p.get("backward", 0) for p in j["passes"]]
    assert backward == [2, 1, 1, 2, 1, 1, 2]


# --------------------------------------------------------------------------- parity of the variants


@pytest.mark.parametrize(
    ("suite", "hparams"),
    [
        # kfac-jax's settings with a 2-step LM interval and inverse period, exact damping.
        (
            "tiny-mse",
            {
                **KFAC.presets["kfac-jax"],
                "inverse_update_period": 2,
                "damping_adaptation_interval": 2,
                "damping_form": "exact",
                "l2_reg": 1e-3,
            },
        ),
        # Fixed lr and momentum: the model runs only on LM steps (t = 1, 3), with one JVP on t = 1.
        (
            "tiny-ce",
            {
                "adaptive_lr": False,
                "adaptive_momentum": False,
                "lr": 0.05,
                "momentum": 0.5,
                "damping_adaptation_interval": 2,
                "estimator": "fisher_exact",
                "untapped": "identity",
            },
        ),
        # Nothing adaptive: no quadratic model, no JVP.
        ("tiny-mse", {"adaptive_lr": False, "adaptive_momentum": False, "adaptive_damping": False, "lr": 0.1}),
        # The paper's preset (lambda_0 = 150, eta = 1e-5, its EMA and warm-up inversions), here
        # without momentum (one JVP every step) and with LM every step, lambda clipped above.
        (
            "tiny-ce",
            {
                **KFAC.presets["paper"],
                "adaptive_momentum": False,
                "damping_adaptation_interval": 1,
                "max_damping": 140.0,
            },
        ),
    ],
)
def test_variants_and_presets_match_the_torch_adapter(suite: str, hparams: dict[str, object]) -> None:
    # Directions (the proposal) only where the factors or their inverses change.
    directions = any(k in hparams for k in ("estimator", "damping_form", "untapped"))
    j = assert_twins_agree("kfac", suite, hparams, steps=5, directions=directions)
    assert j["step"].compile_count == 1


def test_conv_layers_match_the_torch_adapter() -> None:
    """Conv2d factors (im2col patches, T = H_out W_out) on the every-layer-kind test model."""
    assert_twins_agree("kfac", "test-conv", {"estimator": "fisher_exact", "damping": 0.05}, steps=2)


# --------------------------------------------------------------------------- dense references


def _dense_ggn(p, params: jax.Array, batch) -> jax.Array:  # type: ignore[no-untyped-def]
    """``G = (1/B) Jz^T Q Jz`` from the dense output Jacobian (jitted: eager ops compile one by one)."""

    @jax.jit
    def ggn(params: jax.Array, x: jax.Array) -> jax.Array:
        Jz = jax.jacrev(lambda f: p.model.apply(f, x))(params)
        Q = dense_q(p.likelihood, p.model.apply(params, x))
        return jnp.einsum("bcp,bcd,bdq->pq", Jz, Q, Jz) / Jz.shape[0]

    return ggn(params, batch.x)


def _loss_grad(p, params: jax.Array, batch) -> jax.Array:  # type: ignore[no-untyped-def]
    def loss(f: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        return likelihoods.per_sample_loss(p.likelihood, p.model.apply(f, x), y).mean()

    return jax.jit(jax.grad(loss))(params, batch.x, batch.y)


@pytest.mark.parametrize("base", ["tiny-ce", "tiny-mse"])
def test_single_linear_layer_batch_of_one_is_the_exact_damped_natural_gradient(base: str) -> None:
    """One Linear layer, B = 1: the exact-estimator block is the GGN, so with exact damping the
    direction is (G + lam I)^{-1} g, computed here from the dense output Jacobian."""
    n_in, n_out = (13, 3) if base == "tiny-ce" else (10, 1)
    tp = custom_problem(base, ModelSpec((n_in,), (Linear(n_in, n_out),)), batch_size=1)
    p = build_problem(tp.suite, seed=3, dtype="float64")
    b = p.device_batch(2)
    G = _dense_ggn(p, p.params0, b)
    stats = p.jit(lambda params, batch: batch_factors(p, p.oracle(params, batch, taps=True), batch, "fisher_exact"))(
        p.params0, b
    )
    close(kf.dense_kfac(p.layout, stats), G, 1e-10)
    adapter = KFAC()
    hp = KFAC.resolve({"estimator": "fisher_exact", "damping_form": "exact", "damping": 0.3})
    d = p.make_direction(adapter)(p.params0, adapter.init(p, hp), b)
    expected = jnp.linalg.solve(G + 0.3 * jnp.eye(p.num_params), _loss_grad(p, p.params0, b))
    close(d, expected, 1e-9)


@pytest.mark.parametrize("form", ["pi", "exact"])
def test_direction_is_the_densified_damped_kfac_inverse_times_the_gradient(form: str) -> None:
    p = build_problem(get_suite("tiny-ce"), seed=3, dtype="float64")
    b = p.device_batch(1)
    lam, eta = 0.05, 1e-3
    adapter = KFAC()
    hp = KFAC.resolve({"damping": lam, "l2_reg": eta, "damping_form": form})
    d = p.make_direction(adapter)(p.params0, adapter.init(p, hp), b)
    stats = p.jit(lambda params, batch: batch_factors(p, p.oracle(params, batch, taps=True), batch, hp.estimator))(
        p.params0, b
    )
    weight = lam + eta

    @jax.jit
    def dense_inverse(stats: list[kf.LayerStats]) -> jax.Array:
        blocks = []
        for layer, st in zip(p.layout.tapped, stats, strict=True):
            if form == "exact":
                blocks.append(kf.densify_kron(layer, st.G, st.A) + weight * jnp.eye(layer.size))
            else:
                A_hat, G_hat = kf.pi_damped_factors(st.A, st.G, jnp.asarray(weight))
                blocks.append(kf.densify_kron(layer, G_hat, A_hat))
        return jax.scipy.linalg.block_diag(*[jnp.linalg.inv(blk) for blk in blocks])

    close(d, dense_inverse(stats) @ (_loss_grad(p, p.params0, b) + eta * p.params0), 1e-10)


# --------------------------------------------------------------------------- the jitted step


def test_one_compile_cached_inverses_and_passes_booked_per_branch() -> None:
    """Refresh steps (t = 0, 3), LM steps (t = 2, 5) and the first step's single JVP run under
    lax.cond/switch in one executable; the inverses of other steps are the cached arrays."""
    p = build_problem(get_suite("tiny-ce"), seed=3, dtype="float64")
    hp = KFAC.resolve({"inverse_update_period": 3, "inverse_warmup_steps": 0, "damping_adaptation_interval": 3})
    adapter = KFAC()
    step = p.make_step(adapter)
    params, state = p.params0, adapter.init(p, hp)
    passes, inverses, rhos = [], [], []
    for t in range(6):
        before = p.counters.snapshot()
        params, state, stats = step(params, state, p.device_batch(t))
        after = p.counters.snapshot()
        passes.append({k: after[k] - before[k] for k in after if after[k] != before[k]})
        inverses.append(np.asarray(state.inverses[0].left))
        rhos.append(float(stats["rho"]))
    assert step.compile_count == 1 and step.traces == 1
    assert passes[0] == {"forward": 1, "backward": 2, "jvp": 1}
    assert passes[1] == passes[3] == passes[4] == {"forward": 1, "backward": 2, "jvp": 2}
    assert passes[2] == passes[5] == {"forward": 2, "backward": 2, "jvp": 2}
    np.testing.assert_array_equal(inverses[1], inverses[0])
    np.testing.assert_array_equal(inverses[2], inverses[0])
    assert not np.array_equal(inverses[3], inverses[2])
    assert [np.isnan(r) for r in rhos] == [True, True, False, True, True, False]
    assert int(state.steps) == 6


def test_float32_state_stays_float32_and_direction_does_not_advance() -> None:
    p = build_problem(get_suite("tiny-ce"), seed=0, dtype="float32")
    adapter = KFAC()
    state = adapter.init(p, KFAC.resolve({"damping_form": "exact"}))
    step = p.make_step(adapter)
    params = p.params0
    for t in range(2):
        params, state, stats = step(params, state, p.device_batch(t))
    assert float_leaves_dtypes((params, state, stats)) == {np.dtype(np.float32)}
    direction = p.make_direction(adapter)
    d1 = direction(params, state, p.device_batch(5))
    d2 = direction(params, state, p.device_batch(5))
    np.testing.assert_array_equal(np.asarray(d1), np.asarray(d2))
    assert int(state.steps) == 2 and np.all(np.isfinite(np.asarray(d1)))
