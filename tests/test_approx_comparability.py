"""The approximation track scores each method against what it preconditions
(harness/approx/comparability.py): K-FAC with ``l2_reg = eta > 0`` on ``L + eta/2 |theta|^2``,
AdamQLR's cosine to the exact NG marked not comparable; and the site carries both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.torch import build_problem
from db.store import open_store
from harness.approx import ApproxSpec, evaluate, indicator
from harness.approx.comparability import l2_term, ng_not_comparable
from harness.approx.evaluation import _BatchContext
from harness.approx.results import store_result
from harness.registry import get_adapter
from leaderboard.data import load
from leaderboard.views.approx import approx_views
from suites import get_suite


@pytest.fixture(scope="module")
def ctx() -> _BatchContext:
    p = build_problem(get_suite("tiny-ce"), seed=5, dtype="float64", device="cpu")
    params = p.params0
    for t in range(3):
        params = params - 0.5 * p.oracle(params, p.device_batch(100 + t)).grad()
    return _BatchContext(p, params, p.device_batch(7), exact_allowed=True)


def _dense_ggn(ctx: _BatchContext) -> np.ndarray:
    jt = ctx.exact.jt  # type: ignore[union-attr]
    return jt.T @ jt / ctx.exact.batch_size  # type: ignore[union-attr]


def test_woodbury_solve_matches_the_dense_regularised_solve(ctx: _BatchContext) -> None:
    G = _dense_ggn(ctx)
    v = np.random.default_rng(0).normal(size=G.shape[0])
    for mu in (1e-3, 0.1, 2.0):
        dense = np.linalg.solve(G + mu * np.eye(G.shape[0]), v)
        np.testing.assert_allclose(ctx.exact.solve(v, mu), dense, rtol=1e-8, atol=1e-10)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="positive damping"):
        ctx.exact.solve(v, 0.0)  # type: ignore[union-attr]


def test_a_regularised_method_is_scored_on_its_own_objective(ctx: _BatchContext) -> None:
    """The exact NG of ``h = L + eta/2 |theta|^2`` has cosine 1 to itself on ``h``'s terms, but
    not against the NG of ``L``; gamma is ``sqrt(d^T (G + eta I) d) / |d^T (g + eta theta)|``."""
    eta, lam = 0.05, 1e-3
    G = _dense_ggn(ctx)
    theta = ctx.params.numpy()
    gh = ctx.g + eta * theta
    d = np.linalg.solve(G + (lam + eta) * np.eye(G.shape[0]), gh)
    on_h, extra = ctx.figures(torch.as_tensor(d), lam, l2=eta)
    assert on_h["cos_ng"] == pytest.approx(1.0, abs=1e-10)
    assert on_h["rel_err_ng"] == pytest.approx(0.0, abs=1e-8)
    assert on_h["gamma"] == pytest.approx(indicator(float(d @ gh), float(d @ G @ d + eta * d @ d)), rel=1e-9)
    gamma_sgd_h = indicator(float(gh @ gh), float(gh @ G @ gh + eta * gh @ gh))
    assert on_h["gamma_ratio_sgd"] == pytest.approx(on_h["gamma"] / gamma_sgd_h, rel=1e-9)
    assert extra["l2_reg"] == eta and extra["objective"].startswith("L + l2_reg")
    on_l, _ = ctx.figures(torch.as_tensor(d), lam)
    assert on_l["cos_ng"] < 0.999  # against the NG of L the same direction looks worse


def test_not_comparable_keeps_gamma_and_drops_the_cosine(ctx: _BatchContext) -> None:
    d = torch.as_tensor(ctx.g * np.linspace(0.5, 2.0, ctx.g.size))
    out, extra = ctx.figures(d, 1e-3, not_comparable="a reason")
    assert "cos_ng" not in out and "rel_err_ng" not in out and np.isfinite(out["gamma"])
    assert extra["ng_not_comparable"] == "a reason"


def test_which_methods_are_affected() -> None:
    kfac = get_adapter("kfac", "torch")
    assert l2_term(kfac.resolve()) == 0.0
    assert l2_term(kfac.resolve({"l2_reg": 1e-3})) == 1e-3
    assert l2_term(get_adapter("ef", "torch").resolve()) == 0.0
    assert ng_not_comparable("adamqlr") and ng_not_comparable("kfac") is None


def test_evaluation_and_board_mark_adamqlr_and_score_kfac_on_its_objective(tmp_path: object) -> None:
    spec = ApproxSpec(
        suite="tiny-ce",
        optimizers=("sgd", "kfac", "adamqlr"),
        hparams={"kfac": {"l2_reg": 0.01}},
        checkpoints=2,
        batches=2,
        steps=4,
        dtype="float64",
        device="cpu",
    )
    result = evaluate(spec)
    frame = result.frame()
    aq = frame[frame.method == "adamqlr"]
    kf = frame[frame.method == "kfac"]
    sgd = frame[frame.method == "sgd"]
    assert len(aq) == 4 and aq["cos_ng"].isna().all() and aq["gamma"].notna().all()
    assert all(x["ng_not_comparable"] == ng_not_comparable("adamqlr") for x in aq["extra"])
    assert all(x["l2_reg"] == 0.01 for x in kf["extra"]) and kf["cos_ng"].between(-1, 1).all()
    assert sgd["cos_ng"].notna().all() and not any("l2_reg" in x for x in sgd["extra"])
    store = open_store(tmp_path / "a.db")  # type: ignore[operator]
    store_result(store, result)
    (view,) = approx_views(load(store))
    store.dispose()
    rows = {r["method"]: r for r in view["table"]}
    assert rows["adamqlr"]["ng_not_comparable"] == ng_not_comparable("adamqlr")
    assert rows["kfac"]["objective"] and rows["kfac"]["ng_not_comparable"] is None
    assert rows["sgd"]["objective"] is None and np.isfinite(rows["sgd"]["cos_ng"])
