"""Approximation quality (``harness.approx``): the indicator, the exact NG, state feeding, storage, CLI.

Numbers are compared in float64 on the tiny suites: the exact natural gradient against a dense
parameter-space solve, the minimum of ``gamma`` against directions that attain it (the exact NG,
EGN, and iEF on the scalar-output least-squares suite) or must not beat it (random directions).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.torch import build_problem
from backends.torch.optimizers.sgd import SGD
from db.queries import approx_frame, runs_frame, sweeps_frame
from db.store import open_store
from harness import api
from harness.approx import (
    COLUMNS,
    EXACT_METHOD,
    REFERENCE_ROLE,
    ApproxSpec,
    OutputSpaceNG,
    checkpoint_steps,
    evaluate,
    exact_natural_gradient,
    imbalance,
    indicator,
    needs_feeding,
    per_sample_grad_norms,
    summary,
)
from harness.errors import ConfigError
from harness.registry import get_adapter
from suites import get_suite

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


# --------------------------------------------------------------------------- helpers


class Case:
    """A float64 tiny problem at some trained-a-little parameters, with one batch's oracle."""

    def __init__(self, suite: str, step: int = 3) -> None:
        self.problem = build_problem(get_suite(suite), seed=5, dtype="float64", device="cpu")
        p = self.problem
        params = p.params0
        # A few plain gradient steps, so the parameters are not the symmetric initial point.
        for t in range(step):
            params = params - 0.5 * p.oracle(params, p.device_batch(100 + t)).grad()
        self.params = params
        self.batch = p.device_batch(7)
        self.oracle = p.oracle(params, self.batch)
        self.g = self.oracle.grad().numpy()
        self.exact = exact_natural_gradient(p, self.oracle)

    def gamma(self, d: np.ndarray) -> float:
        """``gamma(d)`` the way the track computes it: one ``ggn_quad``, ``d^T g`` in float64."""
        dt = torch.as_tensor(d, dtype=torch.float64)
        return indicator(float(d @ self.g), float(self.oracle.ggn_quad(dt)))

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """Dense ``G`` (P x P) and ``g`` from the output Jacobian and the output Hessian."""
        jz = self.oracle.output_jacobian().numpy()
        z = self.oracle.logits.numpy()
        B, C, _ = jz.shape
        if self.problem.likelihood == "softmax_ce":
            e = np.exp(z - z.max(-1, keepdims=True))
            prob = e / e.sum(-1, keepdims=True)
            q = np.einsum("nc,cd->ncd", prob, np.eye(C)) - prob[:, :, None] * prob[:, None, :]
        else:
            q = np.broadcast_to(np.eye(C), (B, C, C))
        G = np.einsum("ncp,ncd,ndq->pq", jz, q, jz) / B
        r = self.oracle.logit_grads().numpy()
        g = np.einsum("ncp,nc->p", jz, r) / B
        return G, g


@pytest.fixture(scope="module", params=["tiny-ce", "tiny-mse"])
def case(request: pytest.FixtureRequest) -> Case:
    return Case(request.param)


@pytest.fixture(scope="module")
def ce_case() -> Case:
    return Case("tiny-ce")


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- the indicator


def test_indicator_formula_and_undefined_cases() -> None:
    assert indicator(2.0, 9.0) == pytest.approx(1.5)
    assert indicator(-2.0, 9.0) == pytest.approx(1.5)  # |d^T g|, as the paper's Eqn 15
    assert math.isnan(indicator(0.0, 1.0))
    assert math.isnan(indicator(1.0, -1.0))  # a clearly negative GGN quadratic form
    assert indicator(1.0, -1e-20) == 0.0  # rounding below zero reads as zero
    assert math.isnan(indicator(math.nan, 1.0))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-6, 1e6), negative=st.booleans())
def test_gamma_is_invariant_to_scaling_the_direction(ce_case: Case, seed: int, scale: float, negative: bool) -> None:
    d = np.random.default_rng(seed).standard_normal(ce_case.g.shape)
    c = -scale if negative else scale
    assert ce_case.gamma(c * d) == pytest.approx(ce_case.gamma(d), rel=1e-9)


def test_gamma_of_the_gradient_is_gamma_sgd(case: Case) -> None:
    G, g = case.dense()
    np.testing.assert_allclose(case.g, g, rtol=1e-10, atol=1e-14)
    assert case.gamma(case.g) == pytest.approx(math.sqrt(g @ G @ g) / (g @ g), rel=1e-10)


# --------------------------------------------------------------------------- the exact NG


@pytest.mark.parametrize("lam", [1e-1, 1e-3, 1e-6])
def test_output_space_ng_matches_the_dense_damped_solve(case: Case, lam: float) -> None:
    G, g = case.dense()
    P = g.size
    want = np.linalg.solve(G + lam * np.eye(P), g)
    got = case.exact.direction(lam)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * np.abs(want).max())
    np.testing.assert_allclose(case.exact.grad, g, rtol=1e-10, atol=1e-14)
    dtg, dtgd = case.exact.quadratic_terms(lam)
    assert dtg == pytest.approx(want @ g, rel=1e-8)
    assert dtgd == pytest.approx(want @ G @ want, rel=1e-7)


def test_undamped_limit_is_the_pseudo_inverse_and_attains_the_minimum(case: Case) -> None:
    G, g = case.dense()
    pinv = np.linalg.pinv(G, rcond=1e-10, hermitian=True)
    want = pinv @ g
    got = case.exact.direction(None)
    assert cos(got, want) > 1 - 1e-9
    np.testing.assert_allclose(np.linalg.norm(got), np.linalg.norm(want), rtol=1e-6)
    gamma_min = 1.0 / math.sqrt(g @ pinv @ g)
    assert case.exact.gamma_min == pytest.approx(gamma_min, rel=1e-7)
    # The minimum is attained by the exact NG, measured like any method (one JVP).
    assert case.gamma(got) == pytest.approx(gamma_min, rel=1e-7)
    # ... and approached by the damped NG as the damping vanishes.
    assert case.gamma(case.exact.direction(1e-9)) == pytest.approx(gamma_min, rel=1e-6)
    assert case.gamma(case.exact.direction(1e-1)) > gamma_min * (1 + 1e-6)
    # The gradient itself is not optimal on these batches (the test can fail).
    assert case.gamma(case.g) > 1.05 * gamma_min


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), mix=st.floats(0.0, 1.0))
def test_no_direction_beats_the_natural_gradient(case: Case, seed: int, mix: float) -> None:
    rng = np.random.default_rng(seed)
    ng = case.exact.direction(None)
    noise = rng.standard_normal(ng.shape)
    # Random directions, and directions arbitrarily close to the natural gradient.
    for d in (noise, ng + mix * np.linalg.norm(ng) * noise / np.linalg.norm(noise), case.g + mix * noise):
        assert case.gamma(d) >= case.exact.gamma_min * (1 - 1e-9)


def test_egn_direction_attains_the_minimum(case: Case) -> None:
    egn = get_adapter("egn")()
    state = egn.init(case.problem, egn.resolve({"damping": 1e-10}))
    d = egn.direction(case.problem, case.params, state, case.batch).numpy()
    assert case.gamma(d) == pytest.approx(case.exact.gamma_min, rel=1e-6)
    assert cos(d, case.exact.direction(None)) > 1 - 1e-8


def test_ief_attains_the_minimum_on_scalar_least_squares_only() -> None:
    def ief_gamma(c: Case) -> float:
        ief = get_adapter("ief")()
        state = ief.init(c.problem, ief.resolve({"damping": 0.0, "dedup_threshold": None}))
        return c.gamma(ief.direction(c.problem, c.params, state, c.batch).numpy())

    mse = Case("tiny-mse")
    assert ief_gamma(mse) == pytest.approx(mse.exact.gamma_min, rel=1e-6)  # iEF = GN = NG (App. A)
    ce = Case("tiny-ce")
    assert ief_gamma(ce) > 1.01 * ce.exact.gamma_min  # with C > 1 classes iEF is not the NG


def test_output_space_ng_handles_a_singular_output_hessian() -> None:
    """Q with an exact null space (CE's 1 direction, a vanishing class): exact where r lies in range(Q)."""
    rng = np.random.default_rng(0)
    B, C, P = 4, 3, 20
    jz = rng.standard_normal((B, C, P))
    prob = rng.dirichlet(np.ones(C), size=B)
    prob[0] = [1.0 - 1e-30, 1e-30, 0.0]
    q = np.einsum("nc,cd->ncd", prob, np.eye(C)) - prob[:, :, None] * prob[:, None, :]
    y = np.eye(C)[[0, 1, 2, 0]]
    r = prob - y
    ng = OutputSpaceNG(jz, q, r, q_tol=1e-12)
    G = np.einsum("ncp,ncd,ndq->pq", jz, q, jz) / B
    g = np.einsum("ncp,nc->p", jz, r) / B
    np.testing.assert_allclose(ng.grad, g, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ng.direction(1e-2), np.linalg.solve(G + 1e-2 * np.eye(P), g), rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------- small pieces


def test_checkpoint_steps_span_the_run() -> None:
    assert checkpoint_steps(1500, 5) == [0, 375, 750, 1125, 1500]
    assert checkpoint_steps(10, 3) == [0, 5, 10]
    assert checkpoint_steps(2, 5) == [0, 1, 2]  # duplicates removed
    assert checkpoint_steps(100, 1) == [0]
    with pytest.raises(ConfigError):
        checkpoint_steps(10, 0)


def test_imbalance_and_per_sample_norms_in_chunks(ce_case: Case) -> None:
    assert imbalance(np.array([1.0, 4.0, 2.0])) == 4.0
    assert imbalance(np.array([0.0, 1.0])) == math.inf
    J = ce_case.oracle.per_sample_grads().numpy()
    want = np.linalg.norm(J, axis=1)
    p = ce_case.problem
    np.testing.assert_allclose(
        per_sample_grad_norms(p, ce_case.params, ce_case.batch, ce_case.oracle), want, rtol=1e-12
    )
    # Chunks of 3 samples (memory bound on large models) give the same norms.
    chunked = per_sample_grad_norms(p, ce_case.params, ce_case.batch, ce_case.oracle, max_entries=3 * p.num_params)
    np.testing.assert_allclose(chunked, want, rtol=1e-12)


def test_which_methods_get_their_state_fed() -> None:
    p = build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    fed = {}
    for name in ("sgd", "adamw", "ef", "ief", "sf", "kfac", "fngd", "egn", "adamqlr"):
        cls = get_adapter(name)
        fed[name] = needs_feeding(cls, cls().init(p, cls.resolve({})), p)
    assert fed == {
        "sgd": True,  # its momentum buffer starts as None: state that later holds an array
        "adamw": True,
        "ef": False,  # step counters only
        "ief": False,
        "sf": False,
        "kfac": True,
        "fngd": True,
        "egn": True,
        "adamqlr": True,
    }

    class Declared(SGD):
        capabilities = dataclasses.replace(SGD.capabilities)

    object.__setattr__(Declared.capabilities, "stateful_direction", False)  # a future capability wins
    assert needs_feeding(Declared, Declared().init(p, Declared.resolve({})), p) is False


# --------------------------------------------------------------------------- the track


def _spec(**kw: Any) -> ApproxSpec:
    base: dict[str, Any] = {
        "suite": "tiny-ce",
        "checkpoints": 2,
        "batches": 2,
        "steps": 12,
        "dtype": "float64",
        "device": "cpu",
    }
    base.update(kw)
    return ApproxSpec(**base)


def _rows(frame: Any, method: str, checkpoint: int) -> Any:
    return frame[(frame.method == method) & (frame.checkpoint == checkpoint)].sort_values("batch")


def _hand_rolled(window: int | None) -> dict[str, list[tuple[float, float]]]:
    """(||d||, d^T g) of AdamW and K-FAC at step 12, states fed by hand along the AdamW run."""
    p = build_problem(get_suite("tiny-ce"), seed=0, dtype="float64", device="cpu")
    p.step_budget = 12
    ref_cls, kfac_cls = get_adapter("adamw"), get_adapter("kfac")
    ref, kfac, adam = ref_cls(), kfac_cls(), ref_cls()
    ref_state = ref.init(p, ref_cls.resolve({}))
    start = 0 if window is None else 12 - window
    kfac_state, adam_state = None, None
    params = p.params0
    for t in range(12):
        b = p.device_batch(t)
        if t == start:
            kfac_state = kfac.init(p, kfac_cls.resolve({}))
            adam_state = adam.init(p, ref_cls.resolve({}))
        if t >= start:
            _, kfac_state, _ = kfac.step(p, params, kfac_state, b)
            _, adam_state, _ = adam.step(p, params, adam_state, b)
        params, ref_state, _ = ref.step(p, params, ref_state, b)
    out: dict[str, list[tuple[float, float]]] = {"kfac": [], "adamw": []}
    for j in range(2):
        b = p.device_batch(12 + j)
        g = p.oracle(params, b).grad()
        for name, adapter, state in (("kfac", kfac, kfac_state), ("adamw", adam, adam_state)):
            d = adapter.direction(p, params, state, b)
            out[name].append((float(torch.linalg.vector_norm(d)), float(d @ g)))
    return out


@pytest.fixture(scope="module")
def fed_frames() -> dict[str, Any]:
    frames = {}
    for label, window in (("full", None), ("window", 5)):
        r = evaluate(_spec(optimizers=("adamw", "kfac", "ief"), state_window=window, exact_limit=0))
        frames[label] = r.frame()
    return frames


@pytest.mark.parametrize("label,window", [("full", None), ("window", 5)])
def test_stateful_methods_get_their_state_from_the_reference_trajectory(
    fed_frames: dict[str, Any], label: str, window: int | None
) -> None:
    frame = fed_frames[label]
    want = _hand_rolled(window)
    for name in ("kfac", "adamw"):
        rows = _rows(frame, name, 1)
        assert list(rows.step) == [12, 12]
        got = list(zip(rows.update_norm, rows.dtg, strict=True))
        np.testing.assert_allclose(got, want[name], rtol=1e-10)


def test_state_window_changes_what_stateful_methods_see(fed_frames: dict[str, Any]) -> None:
    full, window = fed_frames["full"], fed_frames["window"]
    # K-FAC's averages over 5 steps differ from those over 12; stateless iEF is untouched.
    assert not np.allclose(_rows(full, "kfac", 1).gamma, _rows(window, "kfac", 1).gamma, rtol=1e-6)
    np.testing.assert_allclose(_rows(full, "ief", 1).gamma, _rows(window, "ief", 1).gamma, rtol=1e-12)
    # At the initial checkpoint every method has a fresh state in both settings.
    np.testing.assert_allclose(_rows(full, "kfac", 0).gamma, _rows(window, "kfac", 0).gamma, rtol=1e-12)


def test_damping_sweep_rows_and_exact_comparisons() -> None:
    frame = evaluate(_spec(optimizers=("sgd", "ief", "kfac", "egn"), damping=(1e-4, 1e-2), batches=1)).frame()
    assert list(frame.columns) == list(COLUMNS)
    per = frame.groupby("method")["damping"].apply(lambda s: sorted(s.fillna(-1).unique().tolist()))
    assert per["sgd"] == [-1]  # no damping hyperparameter: once, damping NULL
    assert per["ief"] == per["kfac"] == per["egn"] == [1e-4, 1e-2]
    assert per[EXACT_METHOD] == [-1, 1e-4, 1e-2]
    # The sweep fixes K-FAC's damping (adaptive damping off): it stays at lambda.
    kfac = frame[frame.method == "kfac"]
    assert all(e["fixed_damping"] and e["state_damping"] == d for e, d in zip(kfac.extra, kfac.damping, strict=True))
    # EGN is the exact damped Gauss-Newton step at the same lambda.
    egn = frame[frame.method == "egn"]
    np.testing.assert_allclose(egn.cos_ng, 1.0, rtol=1e-10)
    assert (egn.rel_err_ng < 1e-8).all()
    # Exact rows: gamma from the closed form equals the minimum in the undamped limit.
    ex = frame[(frame.method == EXACT_METHOD) & frame.damping.isna()]
    np.testing.assert_allclose(ex.gamma, [e["gamma_min"] for e in ex.extra], rtol=1e-9)
    assert (
        frame.gamma.dropna() >= np.array([e["gamma_min"] for e in frame.extra])[frame.gamma.notna()] * (1 - 1e-9)
    ).all()
    # sgd's ratio is exactly 1; the imbalance is a batch property shared by all methods.
    np.testing.assert_allclose(frame[frame.method == "sgd"].gamma_ratio_sgd, 1.0, rtol=1e-12)
    assert frame.groupby(["checkpoint", "batch"])["grad_norm_imbalance"].nunique().max() == 1
    table = summary(frame)
    assert table.shape[1] == 2 and table.xs("sgd", level="method").to_numpy().tolist() == [[1.0, 1.0]]
    assert table.index.get_level_values("method").tolist()[:2] == [EXACT_METHOD] * 2


def test_exact_ng_is_left_out_above_the_size_limit() -> None:
    r = evaluate(_spec(optimizers=("sgd",), exact_limit=100, steps=2, batches=1))
    frame = r.frame()
    assert r.exact_ng["available"] is False and "exceeds the limit 100" in r.exact_ng["reason"]
    assert frame.cos_ng.isna().all() and EXACT_METHOD not in set(frame.method)
    assert frame.gamma.notna().all()


class SmallOnly(SGD):
    name = "small-only"
    capabilities = dataclasses.replace(SGD.capabilities, max_params=10)


class RegressionOnly(SGD):
    name = "regression-only"
    capabilities = dataclasses.replace(SGD.capabilities, likelihoods=frozenset({"mse"}))


class RaisingDirection(SGD):
    name = "raising-direction"

    def direction(self, problem: Any, params: Any, state: Any, batch: Any) -> Any:
        raise RuntimeError("no direction today")


class RaisingStep(SGD):
    name = "raising-step"

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> Any:
        raise RuntimeError("no step today")


def test_unsupported_methods_are_skipped_and_failures_recorded() -> None:
    here = "tests.test_approx"
    names = ("sgd", *(f"{here}:{c}" for c in ("SmallOnly", "RegressionOnly", "RaisingDirection", "RaisingStep")))
    r = evaluate(_spec(optimizers=names, steps=3, batches=1))
    frame = r.frame()
    assert "exceed its max_params 10" in r.skipped["small-only"]
    assert "does not support likelihood 'softmax_ce'" in r.skipped["regression-only"]
    assert {"small-only", "regression-only"}.isdisjoint(frame.method)
    bad = frame[frame.method == "raising-direction"]
    assert len(bad) == 2 and bad.gamma.isna().all() and all("no direction today" in e["error"] for e in bad.extra)
    assert "no direction today" in r.errors["raising-direction"]
    # A feeding step that raises is skipped (the last good state is kept) and counted on the rows.
    step = frame[frame.method == "raising-step"].sort_values("checkpoint")
    sgd = frame[frame.method == "sgd"].sort_values("checkpoint")
    np.testing.assert_allclose(step.gamma, sgd.gamma, rtol=1e-12)  # its direction is the gradient
    assert "feed_errors" not in step.extra.iloc[0]
    assert step.extra.iloc[1]["feed_errors"] == 3 and "state feeding at step 0" in step.extra.iloc[1]["feed_error"]
    assert "failed at 3 reference step(s)" in r.errors["raising-step"]
    assert sgd.gamma.notna().all() and "sgd" not in r.errors


def test_bad_input_raises_before_anything_runs() -> None:
    from harness.approx import prepare
    from harness.errors import UnknownOptimizerError

    with pytest.raises(UnknownOptimizerError):
        prepare(_spec(optimizers=("nope",)))
    with pytest.raises(ConfigError, match="damping values"):
        prepare(_spec(damping=(-1.0,)))
    with pytest.raises(ConfigError, match="not evaluated"):
        prepare(_spec(optimizers=("sgd",), hparams={"ief": {"damping": 0}}))
    with pytest.raises(ConfigError, match="batches"):
        prepare(_spec(batches=0))


# --------------------------------------------------------------------------- storage and API


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_db: str) -> str:
    if request.param == "sqlite":
        return tmp_db
    return request.getfixturevalue("pg_url")


def test_rows_round_trip_through_the_database(url: str) -> None:
    frame = api.approx_quality(
        "tiny-ce",
        optimizers=["sgd", "ief", "kfac"],
        checkpoints=2,
        batches=2,
        damping=[1e-3],
        steps=4,
        dtype="float64",
        device="cpu",
        db=url,
        tag="<b>approx</b>",
    )
    for col in ("checkpoint", "step", "method", "damping", "batch", "gamma", "gamma_ratio_sgd", "cos_ng"):
        assert col in frame.columns
    store = open_store(url)
    run_id = frame.attrs["run_id"]
    stored = approx_frame(store, run_id)
    assert len(stored) == len(frame) > 0
    for col in ("checkpoint", "step", "method", "batch"):
        assert stored[col].tolist() == frame[col].tolist()
    for col in ("damping", "gamma", "gamma_ratio_sgd", "dtg", "dtgd", "update_norm", "grad_norm_imbalance", "cos_ng"):
        np.testing.assert_allclose(stored[col].astype(float), frame[col].astype(float), rtol=1e-12, equal_nan=True)
    assert stored.extra.iloc[0]["gamma_min"] == pytest.approx(frame.extra.iloc[0]["gamma_min"], rel=1e-12)
    runs = runs_frame(store, ids=[run_id])
    assert runs.role.tolist() == [REFERENCE_ROLE] and runs.optimizer.tolist() == ["adamw"]
    assert runs.steps.tolist() == [4] and runs.key.tolist() == [None]  # never mistaken for a benchmark run
    sweeps = sweeps_frame(store, kind="approx")
    assert len(sweeps) == 1 and runs.sweep_id.tolist() == sweeps.id.tolist()
    spec = sweeps.spec.iloc[0]
    assert spec["checkpoint_steps"] == [0, 4] and spec["approx"]["damping"] == [1e-3]
    assert {v["method"] for v in spec["variants"]} == {"sgd", "ief", "kfac"}


@pytest.mark.skipif(not __import__("importlib").util.find_spec("jax"), reason="JAX not installed")
def test_the_track_is_backend_neutral() -> None:
    frames = {
        b: evaluate(_spec(backend=b, optimizers=("sgd", "adamw"), steps=4, batches=1)).frame() for b in ("torch", "jax")
    }
    cols = ["gamma", "gamma_ratio_sgd", "dtg", "dtgd", "update_norm", "grad_norm_imbalance", "cos_ng", "rel_err_ng"]
    assert frames["torch"].method.tolist() == frames["jax"].method.tolist()
    np.testing.assert_allclose(
        frames["jax"][cols].to_numpy(float), frames["torch"][cols].to_numpy(float), rtol=1e-9, atol=1e-12
    )


# --------------------------------------------------------------------------- command line


def test_cli_prints_the_table_and_stores(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["approx", "tiny-ce", "-o", "sgd,ief", "--optimizers", "[red]x[/red]"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ngbench: error: ") and len(err.strip().splitlines()) == 1
    assert "[red]x[/red]" in err and not (tmp_path / "ngbench.db").exists()

    small = ["--checkpoints", "2", "--batches", "1", "--steps", "3", "--device", "cpu"]
    code = main(["approx", "tiny-ce", "-o", "sgd,ief", *small, "--damping", "1e-6", "--damping", "1e-2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "median gamma / gamma_SGD" in out and "100% (step 3)" in out
    assert "ief" in out and "1e-06" in out and "exact_ng" in out
    assert "stored with reference run 1" in out and (tmp_path / "ngbench.db").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["approx", "nosuite"], "unknown suite 'nosuite'"),
        (["approx", "tiny-ce", "--damping", "-1"], "--damping values must be finite and >= 0"),
        (["approx", "tiny-ce", "--damping", "abc"], "--damping expects numbers"),
        (["approx", "tiny-ce", "--set", "ief=3"], "--set expects method.key=value"),
        (["approx", "tiny-ce", "--set", "ief.foo=3"], "unknown hyperparameter 'foo'"),
        (["approx", "tiny-ce", "--reference", "nope"], "unknown optimizer 'nope'"),
        (["approx", "tiny-ce", "--dtype", "float16"], "unknown dtype 'float16'"),
    ],
)
def test_cli_bad_input_is_one_clear_line(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, args: list[str], message: str
) -> None:
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "ngbench.db").exists()


def test_the_default_is_one_shared_damping_and_own_defaults_are_the_labelled_option() -> None:
    """The paper's protocol (Sec. 7 E1): EF, SF and iEF compared at ONE damping by default."""
    from harness import api
    from harness.approx import SHARED_DAMPING

    small = {"checkpoints": 1, "batches": 1, "steps": 2, "device": "cpu", "dtype": "float64"}
    shared = api.approx_quality("tiny-ce", optimizers=["ef", "sf", "ief"], **small)
    damped = shared[shared["method"].isin(["ef", "sf", "ief"])]
    assert set(damped["method"]) == {"ef", "sf", "ief"} and set(damped["damping"]) == {SHARED_DAMPING}
    own = api.approx_quality("tiny-ce", optimizers=["ef", "ief"], own_damping=True, **small)
    by_method = own.groupby("method")["damping"].first().to_dict()
    assert by_method["ef"] != by_method["ief"]  # each at its own card default
    from harness.cli import main

    assert main(["approx", "tiny-ce", "--damping", "1e-3", "--own-damping", "--no-store"]) == 2
