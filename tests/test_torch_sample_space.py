"""Sample-space helpers (backends.torch.sample_space) against dense references (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends import layer_kinds
from backends import sample_space as shared_sample_space
from backends.torch import build_problem
from backends.torch import sample_space as ss
from suites import get_suite
from tests.fixtures_torch_sample_space import (
    CONV,
    SEQUENCE,
    dense_jacobian,
    dense_per_sample_grads_for,
    problem_oracle,
)

RTOL = 1e-10
ATOL = 1e-12


SUITES = ["tiny-ce", "tiny-mse", CONV, SEQUENCE]
IDS = ["tiny-ce", "tiny-mse", "conv", "sequence"]


# --------------------------------------------------------------------------- Jacobian ops


@pytest.mark.parametrize("suite", SUITES, ids=IDS)
def test_tap_jacobian_ops_match_the_dense_jacobian(suite, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    p, b, o = problem_oracle(suite)
    J = dense_jacobian(p, b)
    jac = ss.true_jacobian(o)
    assert isinstance(jac, ss.TapJacobian)
    torch.testing.assert_close(jac.gram(), J @ J.T, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(jac.dense(), J, rtol=RTOL, atol=ATOL)
    w = torch.as_tensor(rng.normal(size=J.shape[0]))
    torch.testing.assert_close(jac.rmatvec(w), J.T @ w, rtol=RTOL, atol=ATOL)
    v = torch.as_tensor(rng.normal(size=J.shape[1]))
    torch.testing.assert_close(jac.matvec(v), J @ v, rtol=RTOL, atol=ATOL)
    # Per-layer Grams and per-layer weights, block by block.
    grams = jac.group_grams()
    assert grams.shape == (len(p.layout.tapped), J.shape[0], J.shape[0])
    W = torch.as_tensor(rng.normal(size=(len(jac.groups), J.shape[0])))
    expected = torch.zeros(J.shape[1], dtype=J.dtype)
    for i, (start, stop) in enumerate(jac.groups):
        block = J[:, start:stop]
        torch.testing.assert_close(grams[i], block @ block.T, rtol=RTOL, atol=ATOL)
        expected[start:stop] = block.T @ W[i]
    torch.testing.assert_close(jac.rmatvec_groups(W), expected, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(grams.sum(0), J @ J.T, rtol=RTOL, atol=ATOL)
    # The groups are the tapped layers' (weight, bias) spans and tile the flat vector.
    assert jac.groups[0][0] == 0 and jac.groups[-1][1] == p.num_params
    assert all(a[1] == b_[0] for a, b_ in zip(jac.groups, jac.groups[1:], strict=False))


@pytest.mark.parametrize("suite", [CONV, SEQUENCE], ids=["conv", "sequence"])
@pytest.mark.parametrize("path", ["positions", "per_sample"])
def test_both_gram_paths_of_position_layers_agree(suite, path: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    p, b, o = problem_oracle(suite)
    J = dense_jacobian(p, b)
    chosen: list[str] = []

    def forced(*args: int) -> str:
        chosen.append(path)
        return path

    monkeypatch.setattr(layer_kinds, "positions_gram_path", forced)  # where the maths decides
    jac = ss.true_jacobian(o)
    torch.testing.assert_close(jac.gram(), J @ J.T, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(jac.group_grams().sum(0), J @ J.T, rtol=RTOL, atol=ATOL)
    assert chosen  # the layer with positions consulted the (patched) cost rule


def test_positions_gram_path_is_chosen_by_cost() -> None:
    # Few positions, wide layer: summing over position pairs is cheaper.
    assert ss.positions_gram_path(batch=32, positions=4, d_in=256, d_out=256) == "positions"
    # Many positions (a 32x32 feature map): per-sample gradients are cheaper.
    assert ss.positions_gram_path(batch=128, positions=1024, d_in=576, d_out=64) == "per_sample"


@pytest.mark.parametrize("suite", ["tiny-ce", "tiny-mse", CONV], ids=["tiny-ce", "tiny-mse", "conv"])
@pytest.mark.parametrize("draws", [1, 3])
def test_cotangent_jacobian_stacks_draws_of_sampled_gradients(suite, draws: int, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
    p, b, o = problem_oracle(suite)
    cot = o.sampled_logit_grads(draws)
    before = p.counters.snapshot()
    jac = ss.cotangent_jacobian(o, cot)
    after = p.counters.snapshot()
    assert after["backward"] - before["backward"] == draws  # one reverse pass per draw, no per-sample pass
    assert after["per_sample"] == before["per_sample"]
    Jh = torch.cat([dense_per_sample_grads_for(p, b, cot[i]) for i in range(draws)])
    assert jac.rows == draws * b.x.shape[0]
    torch.testing.assert_close(jac.gram(), Jh @ Jh.T, rtol=RTOL, atol=ATOL)
    w = torch.as_tensor(rng.normal(size=jac.rows))
    torch.testing.assert_close(jac.rmatvec(w), Jh.T @ w, rtol=RTOL, atol=ATOL)
    v = torch.as_tensor(rng.normal(size=p.num_params))
    torch.testing.assert_close(jac.matvec(v), Jh @ v, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("suite", ["tiny-ce", "tiny-mse", CONV], ids=["tiny-ce", "tiny-mse", "conv"])
@pytest.mark.parametrize("draws", [1, 3])
def test_sampled_fisher_apply_takes_g_from_the_stacked_true_rows(suite, draws: int) -> None:  # type: ignore[no-untyped-def]
    """SF's direction from one stack ``[J; J^]``: the damped sampled-Fisher solve on ``g``, with
    one forward and ``1 + draws`` tap reverse passes (no parameter-gradient pass)."""
    p, b, o = problem_oracle(suite)
    lam = 1e-2
    before = p.counters.snapshot()
    res = ss.sampled_fisher_apply(o, draws, lam)
    after = p.counters.snapshot()
    assert {k: after[k] - before[k] for k in after} == {
        "forward": 1,
        "backward": 1 + draws,
        "jvp": 0,
        "vjp": 0,
        "per_sample": 0,
    }
    stacked = o.logit_grads_with_samples(draws)
    assert torch.equal(stacked, torch.cat([o.logit_grads()[None], o.sampled_logit_grads(draws)]))
    J = dense_jacobian(p, b)
    B, P = J.shape
    Jh = torch.cat([dense_per_sample_grads_for(p, b, stacked[1 + i]) for i in range(draws)])
    dense = torch.linalg.solve(Jh.T @ Jh / (B * draws) + lam * torch.eye(P, dtype=torch.float64), J.mean(0))
    torch.testing.assert_close(res.x, dense, rtol=1e-8, atol=1e-10)
    # The Woodbury form on the backward's g gives the same direction, up to rounding.
    woodbury = ss.woodbury_inverse_apply(ss.cotangent_jacobian(o, stacked[1:]), o.grad(), lam)
    torch.testing.assert_close(res.x, woodbury.x, rtol=1e-10, atol=ATOL)
    assert float(res.solve.residual) < 1e-12 and not res.solve.fallback
    with pytest.raises(ValueError):
        ss.sampled_fisher_apply(o, draws, 0.0)


def test_dense_fallback_matches_the_taps(tiny_suite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Models with untapped parameters use the dense J: same numbers, per-sample passes."""
    p, b, o = problem_oracle(tiny_suite)
    taps = ss.true_jacobian(o)
    sampled = ss.cotangent_jacobian(o, o.sampled_logit_grads(2))
    sf_taps = ss.sampled_fisher_apply(p.oracle(p.params0, b, taps=True), 2, 1e-2)
    monkeypatch.setattr(shared_sample_space, "uses_taps", lambda layout: False)
    o2 = p.oracle(p.params0, b)
    before = p.counters.snapshot()["per_sample"]
    dense = ss.true_jacobian(o2)
    dense_sampled = ss.cotangent_jacobian(o2, o2.sampled_logit_grads(2))
    assert isinstance(dense, ss.DenseJacobian) and isinstance(dense_sampled, ss.DenseJacobian)
    assert p.counters.snapshot()["per_sample"] - before == 3
    # SF without taps: the backward's g and the sampled rows by per-sample passes, same direction.
    sf_dense = ss.sampled_fisher_apply(p.oracle(p.params0, b), 2, 1e-2)
    assert p.counters.snapshot()["per_sample"] - before == 5
    torch.testing.assert_close(sf_dense.x, sf_taps.x, rtol=1e-9, atol=ATOL)
    torch.testing.assert_close(dense.gram(), taps.gram(), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(dense.group_grams(), taps.group_grams(), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(dense_sampled.gram(), sampled.gram(), rtol=RTOL, atol=ATOL)
    w = torch.linspace(-1.0, 1.0, dense.rows, dtype=torch.float64)
    torch.testing.assert_close(dense.rmatvec(w), taps.rmatvec(w), rtol=RTOL, atol=ATOL)
    W = torch.stack([w, w.flip(0)])
    torch.testing.assert_close(dense.rmatvec_groups(W), taps.rmatvec_groups(W), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(dense.matvec(p.params0), taps.matvec(p.params0), rtol=RTOL, atol=ATOL)


def test_true_jacobian_with_grad_shares_the_gradient_pass(tiny_suite: str) -> None:
    p, _, o = problem_oracle(tiny_suite)
    before = p.counters.snapshot()
    jac = ss.true_jacobian(o, with_grad=True)
    g = o.grad()
    after = p.counters.snapshot()
    assert after["backward"] - before["backward"] == 1 and after["forward"] - before["forward"] == 1
    torch.testing.assert_close(jac.rmatvec(torch.full((jac.rows,), 1.0 / jac.rows, dtype=torch.float64)), g)


# --------------------------------------------------------------------------- solves


def _spd(rng: np.random.Generator, n: int, rank: int) -> torch.Tensor:
    a = torch.as_tensor(rng.normal(size=(n, rank)))
    return a @ a.T


def test_damped_solve_matches_a_dense_solve_in_float64(rng: np.random.Generator) -> None:
    k = _spd(rng, 12, 20).to(torch.float32)
    b = torch.as_tensor(rng.normal(size=12), dtype=torch.float32)
    sol = ss.damped_solve(k, b, 0.5)
    assert sol.x.dtype == torch.float32 and not sol.fallback
    # A number as the shift is the same solve as the same shift in a float64 array, bit for bit.
    same = ss.damped_solve(k, b, torch.tensor(0.5, dtype=torch.float64))
    assert torch.equal(same.x, sol.x) and torch.equal(same.residual, sol.residual)
    ref = torch.linalg.solve(k.double() + 0.5 * torch.eye(12, dtype=torch.float64), b.double())
    torch.testing.assert_close(sol.x.double(), ref, rtol=1e-6, atol=1e-7)
    assert float(sol.residual) < 1e-12


def test_damped_solve_batches_systems_with_per_system_shifts(rng: np.random.Generator) -> None:
    ks = torch.stack([_spd(rng, 6, 3), _spd(rng, 6, 8)])
    b = torch.as_tensor(rng.normal(size=(2, 6)))
    shift = torch.tensor([0.1, 2.0], dtype=torch.float64)
    sol = ss.damped_solve(ks, b, shift)
    for i in range(2):
        ref = torch.linalg.solve(ks[i] + shift[i] * torch.eye(6, dtype=torch.float64), b[i])
        torch.testing.assert_close(sol.x[i], ref, rtol=RTOL, atol=ATOL)


def test_damped_solve_keep_mask_solves_the_kept_subsystem(rng: np.random.Generator) -> None:
    k = _spd(rng, 8, 10)
    b = torch.as_tensor(rng.normal(size=8))
    keep = torch.tensor([True, False, True, True, False, True, True, True])
    sol = ss.damped_solve(k, b, 0.3, keep)
    idx = keep.nonzero().squeeze(-1)
    ref = torch.linalg.solve(k[idx][:, idx] + 0.3 * torch.eye(len(idx), dtype=torch.float64), b[idx])
    torch.testing.assert_close(sol.x[idx], ref, rtol=RTOL, atol=ATOL)
    assert torch.all(sol.x[~keep] == 0)


def test_damped_solve_falls_back_to_the_psd_projection_when_cholesky_fails(rng: np.random.Generator) -> None:
    """A Gram with a rounding-size negative eigenvalue below a tiny shift is not PD: the
    eigendecomposition path solves with the nearest PSD matrix (eigenvalue clamped to 0)."""
    q, _ = torch.linalg.qr(torch.as_tensor(rng.normal(size=(6, 6))))
    evals = torch.tensor([-1e-6, 1e-3, 0.1, 1.0, 2.0, 5.0], dtype=torch.float64)
    k = q @ torch.diag(evals) @ q.T
    b = torch.as_tensor(rng.normal(size=6))
    sol = ss.damped_solve(k, b, 1e-8)
    assert sol.fallback
    expected = q @ torch.diag(1.0 / (evals.clamp_min(0.0) + 1e-8)) @ q.T @ b
    torch.testing.assert_close(sol.x, expected, rtol=1e-9, atol=0)
    # Undamped: the clamped eigenvalue is below K's rounding floor and is pseudo-inverted.
    sol0 = ss.damped_solve(k, b, 0.0)
    assert sol0.fallback
    inv = torch.cat([torch.zeros(1, dtype=torch.float64), 1.0 / evals[1:]])
    torch.testing.assert_close(sol0.x, q @ torch.diag(inv) @ q.T @ b, rtol=1e-9, atol=1e-12)
    # A PD system never takes the fallback.
    assert not ss.damped_solve(k, b, 1e-5).fallback


def _code_filter(k: torch.Tensor, threshold: float) -> list[int]:
    """The released iEF optimiser's loop, literally: sort by norm (descending), drop the later
    of every near-duplicate pair. Returns the kept original indices."""
    norm = k.diagonal().sqrt()
    order = torch.argsort(norm, descending=True, stable=True).tolist()
    ks = k[order][:, order]
    ns = norm[order]
    cos = ks / (ns[:, None] * ns[None, :])
    removed = set()
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            if abs(float(cos[i, j])) > threshold:
                removed.add(i if ns[j] > ns[i] else j)
    return sorted(order[i] for i in range(len(order)) if i not in removed)


def test_near_duplicate_filter_matches_the_iEF_code_rule(rng: np.random.Generator) -> None:
    base = torch.as_tensor(rng.normal(size=(6, 30)))
    rows = [
        base[0],
        2.0 * base[0] + 1e-3 * base[1],  # near-duplicate of row 0 with a larger norm: row 0 goes
        base[2],
        -0.5 * base[2],  # anti-parallel duplicate of row 2 (|cos| = 1), smaller: goes
        base[3],
        base[3],  # exact duplicate, equal norm: the later index goes
        base[4],
        torch.zeros(30),  # no direction: kept
    ]
    J = torch.stack(rows)
    k = J @ J.T
    keep = ss.near_duplicate_keep(k, 0.99)
    assert keep.tolist() == [False, True, True, False, True, False, True, True]
    nonzero = [i for i in range(len(rows)) if i != 7]
    kk = k[nonzero][:, nonzero]
    assert [nonzero[i] for i in _code_filter(kk, 0.99)] == [i for i in nonzero if keep[i]]
    # On random gradients (no duplicates) nothing is dropped; a threshold of 0 drops all but one
    # sample of every non-orthogonal group.
    k_rand = _spd(rng, 10, 40)
    assert ss.near_duplicate_keep(k_rand, 0.99).all()
    assert sorted(ss.near_duplicate_keep(k_rand, 0.0).nonzero().squeeze(-1).tolist()) == _code_filter(k_rand, 0.0)


def test_host_near_duplicate_filter_gives_the_torch_mask(rng: np.random.Generator) -> None:
    """On a CPU device the filter runs on NumPy (``host_near_duplicate_keep``): the same mask as
    the shared formula on torch, for float32 and float64 Grams with near-duplicates at the
    threshold's edge, equal norms, zero rows and a batch of Grams; gram_direction's mask is None
    exactly when it keeps every sample."""
    checked = 0
    for trial in range(40):
        base = rng.normal(size=(32, 50))
        base[1] = base[0] * (1 + 1e-3 * trial)  # exact and near duplicates, scaled
        base[2] = base[0] + (0.02 + 0.002 * trial) * rng.normal(size=50)  # |cos| around 0.99
        base[3] = base[4]  # equal norms: ranked by index
        base[5] = 0.0  # no direction
        for dtype in (torch.float32, torch.float64):
            J = torch.as_tensor(base, dtype=dtype)
            k = J @ J.T
            for threshold in (0.99, 0.999, 0.0):
                expected = shared_sample_space.near_duplicate_keep(ss.TORCH_OPS, k, threshold)
                got = ss.host_near_duplicate_keep(k, threshold)
                assert got.dtype == torch.bool and torch.equal(got, expected)
                checked += int((~expected).sum())
    assert checked > 0  # the masks compared dropped samples
    batch = torch.as_tensor(rng.normal(size=(3, 8, 20)))
    grams = batch @ batch.transpose(-1, -2)
    expected = shared_sample_space.near_duplicate_keep(ss.TORCH_OPS, grams, 0.5)
    assert torch.equal(ss.host_near_duplicate_keep(grams, 0.5), expected)
    # What gram_direction calls: None when every sample is kept, else the same mask.
    assert ss.TapJacobian.near_duplicate_mask is ss.near_duplicate_mask
    no_duplicates = _spd(rng, 10, 40)
    assert ss.near_duplicate_mask(no_duplicates, 0.99) is None
    assert torch.equal(ss.near_duplicate_mask(k, 0.0), ss.near_duplicate_keep(k, 0.0))


def test_gram_direction_and_woodbury_apply_match_dense_formulas(tiny_suite: str) -> None:
    p, b, o = problem_oracle(tiny_suite)
    J = dense_jacobian(p, b)
    B = J.shape[0]
    jac = ss.true_jacobian(o)
    t = torch.linspace(0.5, 2.0, B, dtype=torch.float64)
    lam = 1e-3
    res = ss.gram_direction(jac, t, lam, None)
    x = torch.linalg.solve(J @ J.T + B * lam * torch.eye(B, dtype=torch.float64), t)
    torch.testing.assert_close(res.direction, J.T @ x, rtol=1e-9, atol=ATOL)
    torch.testing.assert_close(
        res.target_residual, torch.linalg.vector_norm(J @ J.T @ x - t) / t.norm(), rtol=1e-8, atol=0
    )
    v = torch.linspace(-1.0, 1.0, J.shape[1], dtype=torch.float64)
    wb = ss.woodbury_inverse_apply(jac, v, lam)
    ref = torch.linalg.solve(J.T @ J / B + lam * torch.eye(J.shape[1], dtype=torch.float64), v)
    torch.testing.assert_close(wb.x, ref, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError):
        ss.woodbury_inverse_apply(jac, v, 0.0)


def test_taps_keep_the_working_dtype() -> None:
    p = build_problem(get_suite("tiny-ce"), seed=0, dtype="float32")
    b = p.device_batch(0)
    o = p.oracle(p.params0, b, taps=True)
    jac = ss.true_jacobian(o)
    k = jac.gram()
    assert k.dtype == torch.float32
    sol = ss.damped_solve(k, torch.ones(jac.rows), 1e-2)
    assert sol.x.dtype == torch.float32 and sol.residual.dtype == torch.float64
    assert jac.rmatvec(sol.x).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("draws", [1, 2, 3])
def test_gram_rows_are_the_rows_of_the_full_gram(dtype: torch.dtype, draws: int, rng: np.random.Generator) -> None:
    """``gram_rows(start)`` (SF's sampled rows, formed alone) equals ``gram()[start:]`` bit for bit,
    for every whole draw and for a start inside a draw (sliced)."""
    layout = build_problem(get_suite("tiny-ce"), seed=0, dtype="float64").layout
    batch = 7
    tapped = layout.tapped
    inputs = [torch.as_tensor(rng.normal(size=(batch, t.weight.shape[1])), dtype=dtype) for t in tapped]
    cots = [torch.as_tensor(rng.normal(size=(draws * batch, t.weight.shape[0])), dtype=dtype) for t in tapped]
    jac = ss.TapJacobian(layout, inputs, cots, draws=draws)
    full = jac.gram()
    for start in (*range(0, draws * batch, batch), 3):
        rows = jac.gram_rows(start)
        assert rows.shape == (draws * batch - start, draws * batch)
        assert torch.equal(rows, full[start:])
