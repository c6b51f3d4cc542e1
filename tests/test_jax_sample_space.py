"""Sample-space helpers on JAX (backends.jax.sample_space) against dense JAX references (float64).

Dense references: ``J`` is the reverse-mode Jacobian of the vector of per-sample losses (one
``jax.jacrev`` of the whole batch, independent of the oracle's taps and of its per-sample
pass); sampled-label rows are ``R_n^T Jz_n`` from the dense output Jacobian. Each helper runs
inside a counted jit, as in an adapter's step.
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backends import blocks, layer_kinds
from backends import sample_space as shared_sample_space
from backends.jax import build_problem, likelihoods
from backends.jax import sample_space as ss
from backends.jax.ops import JAX_OPS
from backends.spec import Batch
from suites import get_suite
from suites.spec import Suite
from tests.fixtures_torch_sample_space import CONV, SEQUENCE

RTOL = 1e-10
ATOL = 1e-12

SUITES: dict[str, str | Suite] = {"tiny-ce": "tiny-ce", "tiny-mse": "tiny-mse", "conv": CONV, "sequence": SEQUENCE}


@cache
def problem(name: str, dtype: str = "float64") -> Any:
    suite = SUITES[name]
    return build_problem(get_suite(suite) if isinstance(suite, str) else suite, seed=3, dtype=dtype)


@cache
def _dense_jacobian_fn(p: Any) -> Any:
    def per_sample_losses(flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        return likelihoods.per_sample_loss(p.likelihood, p.model.apply(flat, x), y)

    return jax.jit(jax.jacrev(per_sample_losses))


@cache
def _output_jacobian_fn(p: Any) -> Any:
    return jax.jit(jax.jacrev(lambda flat, x: p.model.apply(flat, x)))


def dense_jacobian(p: Any, b: Batch[jax.Array], params: jax.Array | None = None) -> np.ndarray:
    """``J`` (rows ``grad l_n``): the Jacobian of the per-sample loss vector."""
    return np.asarray(_dense_jacobian_fn(p)(p.params0 if params is None else params, b.x, b.y))


def dense_cotangent_rows(p: Any, b: Batch[jax.Array], cotangent: jax.Array) -> np.ndarray:
    """Rows ``Jz_n^T R_n`` from the dense output Jacobian ``(B, C, P)``."""
    return np.einsum("bc,bcp->bp", np.asarray(cotangent), np.asarray(_output_jacobian_fn(p)(p.params0, b.x)))


def close(actual: Any, desired: Any, rtol: float = RTOL, atol: float = ATOL) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


# --------------------------------------------------------------------------- Jacobian ops


def _tap_ops(p: Any, w: np.ndarray, groups_w: np.ndarray, v: np.ndarray) -> dict[str, jax.Array]:
    def ops(params: jax.Array, batch: Batch[jax.Array], w: jax.Array, gw: jax.Array, v: jax.Array) -> Any:
        jac = ss.true_jacobian(p.oracle(params, batch, taps=True))
        assert isinstance(jac, ss.TapJacobian)
        return {
            "gram": jac.gram(),
            "group_grams": jac.group_grams(),
            "dense": jac.dense(),
            "rmatvec": jac.rmatvec(w),
            "rmatvec_groups": jac.rmatvec_groups(gw),
            "matvec": jac.matvec(v),
        }

    return p.jit(ops)(p.params0, p.device_batch(0), w, groups_w, v)


@pytest.mark.parametrize("name", list(SUITES))
def test_tap_jacobian_ops_match_the_dense_jacobian(name: str, rng: np.random.Generator) -> None:
    p = problem(name)
    b = p.device_batch(0)
    J = dense_jacobian(p, b)
    B, P = J.shape
    spans = blocks.block_spans(p.layout)
    w, v, W = (np.asarray(rng.normal(size=shape)) for shape in (B, P, (len(spans), B)))
    out = _tap_ops(p, w, W, v)
    close(out["gram"], J @ J.T)
    close(out["dense"], J)
    close(out["rmatvec"], J.T @ w)
    close(out["matvec"], J @ v)
    assert out["group_grams"].shape == (len(p.layout.tapped), B, B)
    expected = np.zeros(P)
    for i, (start, stop) in enumerate(spans):
        block = J[:, start:stop]
        close(out["group_grams"][i], block @ block.T)
        expected[start:stop] = block.T @ W[i]
    close(out["rmatvec_groups"], expected)
    # The blocks are the tapped layers' (weight, bias) spans and tile the flat vector.
    assert spans[0][0] == 0 and spans[-1][1] == P
    assert all(a[1] == c[0] for a, c in itertools.pairwise(spans))


@pytest.mark.parametrize("name", ["conv", "sequence"])
@pytest.mark.parametrize("path", ["positions", "per_sample"])
def test_both_gram_paths_of_position_layers_agree(name: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = problem(name)
    b = p.device_batch(0)
    J = dense_jacobian(p, b)
    chosen: list[str] = []

    def forced(*args: int) -> str:
        chosen.append(path)
        return path

    monkeypatch.setattr(layer_kinds, "positions_gram_path", forced)  # where the maths decides

    def grams(params: jax.Array, batch: Batch[jax.Array]) -> tuple[jax.Array, jax.Array]:
        jac = ss.true_jacobian(p.oracle(params, batch, taps=True))
        return jac.gram(), jac.group_grams()

    k, kl = p.jit(grams)(p.params0, b)
    assert chosen  # the layer with positions consulted the (patched) cost rule at trace time
    close(k, J @ J.T)
    close(kl.sum(0), J @ J.T)


def test_positions_gram_path_is_chosen_by_cost() -> None:
    # Few positions, wide layer: summing over position pairs is cheaper.
    assert blocks.positions_gram_path(batch=32, positions=4, d_in=256, d_out=256) == "positions"
    # Many positions (a 32x32 feature map): per-sample gradients are cheaper.
    assert blocks.positions_gram_path(batch=128, positions=1024, d_in=576, d_out=64) == "per_sample"
    assert ss.positions_gram_path is blocks.positions_gram_path


@pytest.mark.parametrize("name", ["tiny-ce", "tiny-mse", "conv"])
def test_cotangent_jacobian_stacks_draws_of_sampled_gradients(name: str, rng: np.random.Generator) -> None:
    p = problem(name)
    b = p.device_batch(0)
    draws = 3
    w, v = rng.normal(size=draws * p.batch_size), rng.normal(size=p.num_params)

    def ops(params: jax.Array, batch: Batch[jax.Array], w: jax.Array, v: jax.Array) -> Any:
        o = p.oracle(params, batch, taps=True)
        cot = o.sampled_logit_grads(draws)
        jac = ss.cotangent_jacobian(o, cot)
        assert jac.rows == draws * p.batch_size
        return cot, jac.gram(), jac.rmatvec(w), jac.matvec(v)

    before = p.counters.snapshot()
    cot, k, jtw, jv = p.jit(ops)(p.params0, b, w, v)
    # One forward, one reverse pass per draw, no per-sample pass.
    assert delta(before, p.counters.snapshot()) == {"forward": 1, "backward": draws}
    Jh = np.concatenate([dense_cotangent_rows(p, b, cot[i]) for i in range(draws)])
    close(k, Jh @ Jh.T)
    close(jtw, Jh.T @ w)
    close(jv, Jh @ v)


def test_sampled_fisher_apply_takes_g_from_the_stacked_true_rows() -> None:
    """SF's direction from one stack ``[J; J^]`` under jit: the damped sampled-Fisher solve on
    ``g``, one forward and ``1 + draws`` tap reverse passes (no parameter-gradient pass); the
    torch test covers both likelihoods."""
    p = problem("tiny-ce")
    b = p.device_batch(0)
    draws, lam = 2, 1e-2

    def ops(params: jax.Array, batch: Batch[jax.Array]) -> Any:
        o = p.oracle(params, batch, taps=True)
        stacked = o.logit_grads_with_samples(draws)
        parts = jnp.concatenate([o.logit_grads()[None], o.sampled_logit_grads(draws)])
        return ss.sampled_fisher_apply(o, draws, lam).x, stacked, parts

    before = p.counters.snapshot()
    d, stacked, parts = p.jit(ops)(p.params0, b)
    assert delta(before, p.counters.snapshot()) == {"forward": 1, "backward": 1 + draws}
    np.testing.assert_array_equal(np.asarray(stacked), np.asarray(parts))
    J = dense_jacobian(p, b)
    B, P = J.shape
    Jh = np.concatenate([dense_cotangent_rows(p, b, stacked[1 + i]) for i in range(draws)])
    close(d, np.linalg.solve(Jh.T @ Jh / (B * draws) + lam * np.eye(P), J.mean(0)), rtol=1e-8, atol=1e-10)


def test_dense_fallback_matches_the_taps(tiny_suite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Models with untapped parameters use the dense J: same numbers, per-sample passes."""
    p = problem(tiny_suite)
    b = p.device_batch(0)
    lin = jnp.asarray(np.linspace(-1.0, 1.0, p.batch_size))
    W = jnp.stack([lin, lin[::-1]])

    def ops(params: jax.Array, batch: Batch[jax.Array]) -> Any:
        o = p.oracle(params, batch, taps=ss.uses_taps(p.layout))
        jac = ss.true_jacobian(o)
        sampled = ss.cotangent_jacobian(o, o.sampled_logit_grads(2))
        kinds = (type(jac).__name__, type(sampled).__name__)
        out = (jac.gram(), jac.group_grams(), sampled.gram(), jac.rmatvec(lin), jac.rmatvec_groups(W))
        return kinds, out, jac.matvec(params)

    kinds_taps, taps, taps_mv = p.jit(ops)(p.params0, b)
    monkeypatch.setattr(shared_sample_space, "uses_taps", lambda layout: False)
    before = p.counters.snapshot()
    kinds_dense, dense, dense_mv = p.jit(ops)(p.params0, b)
    assert kinds_taps == ("TapJacobian", "TapJacobian") and kinds_dense == ("DenseJacobian", "DenseJacobian")
    assert delta(before, p.counters.snapshot()) == {"forward": 1, "per_sample": 3}
    for d, t in zip(dense, taps, strict=True):
        close(d, t)
    close(dense_mv, taps_mv)


def test_true_jacobian_with_grad_shares_the_gradient_pass(tiny_suite: str) -> None:
    p = problem(tiny_suite)

    def ops(params: jax.Array, batch: Batch[jax.Array]) -> tuple[jax.Array, jax.Array]:
        o = p.oracle(params, batch, taps=True)
        jac = ss.true_jacobian(o, with_grad=True)
        return jac.rmatvec(jnp.full((jac.rows,), 1.0 / jac.rows, dtype=params.dtype)), o.grad()

    before = p.counters.snapshot()
    jtw, g = p.jit(ops)(p.params0, p.device_batch(0))
    assert delta(before, p.counters.snapshot()) == {"forward": 1, "backward": 1}
    close(jtw, g)


# --------------------------------------------------------------------------- solves


def _spd(rng: np.random.Generator, n: int, rank: int) -> np.ndarray:
    a = rng.normal(size=(n, rank))
    return a @ a.T


def test_damped_solve_matches_a_dense_solve_in_float64(rng: np.random.Generator) -> None:
    k = _spd(rng, 12, 20).astype(np.float32)
    b = rng.normal(size=12).astype(np.float32)
    sol = jax.jit(ss.damped_solve)(jnp.asarray(k), jnp.asarray(b), 0.5)
    assert sol.x.dtype == jnp.float32 and sol.residual.dtype == jnp.float64 and not bool(sol.fallback)
    ref = np.linalg.solve(k.astype(np.float64) + 0.5 * np.eye(12), b.astype(np.float64))
    close(sol.x, ref, rtol=1e-6, atol=1e-7)
    assert float(sol.residual) < 1e-12


def test_damped_solve_batches_systems_with_per_system_shifts(rng: np.random.Generator) -> None:
    ks = np.stack([_spd(rng, 6, 3), _spd(rng, 6, 8)])
    b = rng.normal(size=(2, 6))
    shift = np.array([0.1, 2.0])
    sol = jax.jit(ss.damped_solve)(jnp.asarray(ks), jnp.asarray(b), jnp.asarray(shift))
    for i in range(2):
        close(sol.x[i], np.linalg.solve(ks[i] + shift[i] * np.eye(6), b[i]))


def test_damped_solve_keep_mask_solves_the_kept_subsystem(rng: np.random.Generator) -> None:
    k = _spd(rng, 8, 10)
    b = rng.normal(size=8)
    keep = np.array([True, False, True, True, False, True, True, True])
    sol = jax.jit(ss.damped_solve)(jnp.asarray(k), jnp.asarray(b), 0.3, jnp.asarray(keep))
    idx = np.flatnonzero(keep)
    ref = np.linalg.solve(k[np.ix_(idx, idx)] + 0.3 * np.eye(len(idx)), b[idx])
    close(np.asarray(sol.x)[idx], ref)
    assert np.all(np.asarray(sol.x)[~keep] == 0)


def test_damped_solve_falls_back_to_the_psd_projection_under_jit(rng: np.random.Generator) -> None:
    """A Gram with a rounding-size negative eigenvalue below a tiny shift is not PD: Cholesky
    gives NaNs, and the traced branch solves with the nearest PSD matrix (eigenvalue clamped at
    0) without leaving the compiled function."""
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    evals = np.array([-1e-6, 1e-3, 0.1, 1.0, 2.0, 5.0])
    k = jnp.asarray(q @ np.diag(evals) @ q.T)
    b = rng.normal(size=6)
    solve = jax.jit(ss.damped_solve)
    sol = solve(k, jnp.asarray(b), 1e-8)
    assert bool(sol.fallback)
    close(sol.x, q @ np.diag(1.0 / (np.maximum(evals, 0.0) + 1e-8)) @ q.T @ b, rtol=1e-9, atol=0)
    assert float(sol.residual) > 1e-3  # the residual reports how far the projected solve is off
    # Undamped: the clamped eigenvalue is below K's rounding floor and is pseudo-inverted.
    sol0 = solve(k, jnp.asarray(b), 0.0)
    assert bool(sol0.fallback)
    inv = np.concatenate([[0.0], 1.0 / evals[1:]])
    close(sol0.x, q @ np.diag(inv) @ q.T @ b, rtol=1e-9, atol=1e-12)
    # A PD system never takes the fallback; one failing system sends the batch down it (as torch).
    assert not bool(solve(k, jnp.asarray(b), 1e-5).fallback)
    both = solve(jnp.stack([k, k]), jnp.asarray(np.stack([b, b])), jnp.asarray([1e-5, 1e-8]))
    assert bool(both.fallback)
    close(both.x[1], sol.x, rtol=1e-9, atol=0)


def test_damped_solve_is_the_cholesky_solve_and_keeps_the_factor_out_of_the_branch(rng: np.random.Generator) -> None:
    """On a PD system the jitted solve is bit for bit the two triangular solves with the
    factor of ``K + shift I``, and those run before the fallback's ``lax.cond``: the branch
    gets no ``n x n`` operand but ``K`` (for the eigendecomposition), so XLA copies no factor
    into it (docs/profiling.md, "EGN (JAX)")."""
    n = 24
    k = jnp.asarray(_spd(rng, n, 30))
    b = jnp.asarray(rng.normal(size=n))
    sol = jax.jit(ss.damped_solve)(k, b, 0.3)
    L = jnp.linalg.cholesky(k + 0.3 * jnp.eye(n))
    ref = jax.scipy.linalg.cho_solve((L, True), b[:, None])[:, 0]
    assert not bool(sol.fallback)
    np.testing.assert_array_equal(np.asarray(sol.x), np.asarray(ref))
    jaxpr = jax.make_jaxpr(lambda k, b: ss.damped_solve(k, b, 0.3).x)(k, b).jaxpr
    conds = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "cond"]
    assert len(conds) == 1
    square = [v.aval.shape for v in conds[0].invars if getattr(v.aval, "shape", ()) == (n, n)]
    assert square == [(n, n)]  # K itself, not the factor as well


def test_jax_cholesky_reads_the_lower_triangle_and_flags_failure_on_the_diagonal(rng: np.random.Generator) -> None:
    """``JaxOps.cholesky`` factors the lower triangle as LAPACK and torch's ``cholesky_ex`` do
    (no averaging with the transpose: the same factor for an exactly symmetric input), and its
    failure flag, read from the diagonal, is raised for an indefinite matrix only."""
    k = _spd(rng, 6, 8) + np.eye(6)
    scrambled = np.tril(k) + np.triu(rng.normal(size=(6, 6)), 1)
    chol, failed = jax.jit(JAX_OPS.cholesky)(jnp.asarray(scrambled))
    np.testing.assert_allclose(np.asarray(chol), np.linalg.cholesky(k), rtol=1e-12, atol=1e-12)
    assert not bool(failed)
    chol_sym, _ = jax.jit(JAX_OPS.cholesky)(jnp.asarray(k))
    np.testing.assert_array_equal(np.asarray(chol_sym), np.asarray(jnp.linalg.cholesky(jnp.asarray(k))))
    indefinite = k - 10.0 * np.eye(6) * np.abs(k).max()
    assert bool(jax.jit(JAX_OPS.cholesky)(jnp.asarray(indefinite))[1])
    both = jnp.stack([jnp.asarray(k), jnp.asarray(indefinite)])
    assert bool(jax.jit(JAX_OPS.cholesky)(both)[1])


def _code_filter(k: np.ndarray, threshold: float) -> list[int]:
    """The released iEF optimiser's loop, literally: sort by norm (descending), drop the later
    of every near-duplicate pair. Returns the kept original indices."""
    norm = np.sqrt(np.diag(k))
    order = np.argsort(-norm, kind="stable")
    ks, ns = k[np.ix_(order, order)], norm[order]
    cos = ks / (ns[:, None] * ns[None, :])
    removed = set()
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            if abs(cos[i, j]) > threshold:
                removed.add(i if ns[j] > ns[i] else j)
    return sorted(int(order[i]) for i in range(len(order)) if i not in removed)


def test_near_duplicate_filter_matches_the_iEF_code_rule(rng: np.random.Generator) -> None:
    base = rng.normal(size=(6, 30))
    rows = [
        base[0],
        2.0 * base[0] + 1e-3 * base[1],  # near-duplicate of row 0 with a larger norm: row 0 goes
        base[2],
        -0.5 * base[2],  # anti-parallel duplicate of row 2 (|cos| = 1), smaller: goes
        base[3],
        base[3],  # exact duplicate, equal norm: the later index goes
        base[4],
        np.zeros(30),  # no direction: kept
    ]
    J = np.stack(rows)
    k = J @ J.T
    keep_fn = jax.jit(ss.near_duplicate_keep, static_argnums=1)
    keep = np.asarray(keep_fn(jnp.asarray(k), 0.99))
    assert keep.dtype == bool and keep.tolist() == [False, True, True, False, True, False, True, True]
    nonzero = [i for i in range(len(rows)) if i != 7]
    assert [nonzero[i] for i in _code_filter(k[np.ix_(nonzero, nonzero)], 0.99)] == [i for i in nonzero if keep[i]]
    # Random gradients (no duplicates): nothing dropped; threshold 0 keeps one per correlated group.
    k_rand = _spd(rng, 10, 40)
    assert np.asarray(keep_fn(jnp.asarray(k_rand), 0.99)).all()
    assert np.flatnonzero(np.asarray(keep_fn(jnp.asarray(k_rand), 0.0))).tolist() == _code_filter(k_rand, 0.0)


def test_gram_direction_and_woodbury_apply_match_dense_formulas(tiny_suite: str) -> None:
    p = problem(tiny_suite)
    b = p.device_batch(0)
    J = dense_jacobian(p, b)
    B, P = J.shape
    t = np.linspace(0.5, 2.0, B)
    v = np.linspace(-1.0, 1.0, P)
    lam = 1e-3

    def ops(params: jax.Array, batch: Batch[jax.Array]) -> Any:
        jac = ss.true_jacobian(p.oracle(params, batch, taps=True))
        return ss.gram_direction(jac, jnp.asarray(t), lam, None), ss.woodbury_inverse_apply(jac, jnp.asarray(v), lam)

    res, wb = p.jit(ops)(p.params0, b)
    x = np.linalg.solve(J @ J.T + B * lam * np.eye(B), t)
    close(res.direction, J.T @ x, rtol=1e-9)
    close(res.target_residual, np.linalg.norm(J @ J.T @ x - t) / np.linalg.norm(t), rtol=1e-8, atol=0)
    assert res.kept == B
    ref = np.linalg.solve(J.T @ J / B + lam * np.eye(P), v)
    close(wb.x, ref, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="positive damping"):
        ss.woodbury_inverse_apply(ss.DenseJacobian(p.layout, jnp.asarray(J)), jnp.asarray(v), 0.0)


def test_taps_keep_the_working_dtype() -> None:
    p = build_problem(get_suite("tiny-ce"), seed=0, dtype="float32")

    def ops(params: jax.Array, batch: Batch[jax.Array]) -> Any:
        jac = ss.true_jacobian(p.oracle(params, batch, taps=True))
        k = jac.gram()
        sol = ss.damped_solve(k, jnp.ones(jac.rows, dtype=params.dtype), 1e-2)
        return k, sol, jac.rmatvec(sol.x)

    k, sol, d = p.jit(ops)(p.params0, p.device_batch(0))
    assert k.dtype == jnp.float32 and sol.x.dtype == jnp.float32 and d.dtype == jnp.float32
    assert sol.residual.dtype == jnp.float64
