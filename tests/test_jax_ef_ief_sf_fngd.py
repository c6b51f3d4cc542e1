"""EF, iEF, SF and FNGD on JAX: directions against dense JAX formulas, the jitted step (one
compile per variant, passes per call, float32 kept), FNGD's coefficient table and its
solve-free epochs, the SGD base optimizer against optax, and the adapter contract.

Cross-backend agreement (direction, first update, stats, 20-step losses, passes) is
``tests/test_parity.py``; the helpers are ``tests/test_jax_sample_space.py``.
"""

from __future__ import annotations

import pickle
from functools import cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from backends import sample_space as shared_sample_space
from backends.jax import build_problem, likelihoods
from backends.jax import sample_space as ss
from backends.jax.optimizers import builtin_adapters
from backends.spec import Batch
from suites import get_suite
from suites.spec import batch_indices
from tests.fixtures_torch_sample_space import CONV
from tests.test_jax_sample_space import close, delta, dense_cotangent_rows, dense_jacobian

LAM = 1e-2
NAMES = ("ef", "ief", "sf", "fngd")


@cache
def problem(name: str = "tiny-ce", dtype: str = "float64") -> Any:
    suite = CONV if name == "conv" else get_suite(name)
    return build_problem(suite, seed=3, dtype=dtype)


def make(name: str, **overrides: Any) -> tuple[Any, Any]:
    cls = builtin_adapters()[name]
    return cls(), cls.resolve(overrides)


def dense_sample_space(J: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """``J^T (J J^T + B lambda I)^{-1} t``."""
    B = J.shape[0]
    return np.asarray(J.T @ np.linalg.solve(J @ J.T + B * lam * np.eye(B), t))


def logit_sq_norms(p: Any, b: Batch[jax.Array]) -> np.ndarray:
    """``s_n = ||r_n||^2`` at ``params0``."""
    z = p.model.apply(p.params0, b.x)
    return np.sum(np.asarray(likelihoods.logit_grads(p.likelihood, z, b.y)) ** 2, axis=-1)


# --------------------------------------------------------------------------- directions


def dense_coefficients(J: np.ndarray, spans: list[tuple[int, int]], lam: float = LAM) -> np.ndarray:
    """``c_l = (J_l J_l^T + B lambda I)^{-1} 1`` per block, ``(G, B)``."""
    B = J.shape[0]
    return np.stack([np.linalg.solve(J[:, a:c] @ J[:, a:c].T + B * lam * np.eye(B), np.ones(B)) for a, c in spans])


def dense_weighted(J: np.ndarray, spans: list[tuple[int, int]], c: Any) -> np.ndarray:
    return np.concatenate([np.asarray(J[:, a:e].T @ c[i]) for i, (a, e) in enumerate(spans)])


def spans_of(p: Any) -> list[tuple[int, int]]:
    return list(ss.block_spans(p.layout))


def directions(p: Any, batch: Batch[jax.Array], variants: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """``direction`` of several adapter variants at ``params0``, traced into one jitted function
    (one compile instead of one per variant)."""
    made = {key: make(name, **overrides) for key, (name, overrides) in variants.items()}
    states = {key: adapter.init(p, hp) for key, (adapter, hp) in made.items()}

    def all_directions(params: jax.Array, states: dict[str, Any], batch: Batch[jax.Array]) -> dict[str, Any]:
        return {key: made[key][0].direction(p, params, states[key], batch) for key in made}

    out = p.jit(all_directions)(p.params0, states, batch)
    return {key: np.asarray(value) for key, value in out.items()}


@pytest.mark.parametrize("suite", ["tiny-ce", "conv"])
def test_directions_are_the_papers_formulas_against_dense_references(suite: str) -> None:
    """EF: Eqn 5 (= (F~ + lambda I)^{-1} g); iEF: Eqn 8 (J d ~ s, Eqn 7); SF: Eqns 47-49 with
    the batch-noise labels; FNGD's first epoch: EF (shared) and block-diagonal EF (per layer)."""
    p = problem(suite)
    b = p.device_batch(1)
    k = 1 if suite == "conv" else 3
    d = directions(
        p,
        b,
        {
            "ef": ("ef", {"damping": LAM, "dedup_threshold": None}),
            "ief": ("ief", {"damping": 1e-6, "dedup_threshold": None}),
            "sf": ("sf", {"damping": LAM, "samples": k}),
            "fngd_shared": ("fngd", {"damping": LAM, "coefficients": "shared"}),
            "fngd": ("fngd", {"damping": LAM}),
        },
    )
    J = dense_jacobian(p, b)
    B, P = J.shape
    close(d["ef"], dense_sample_space(J, np.ones(B), LAM), rtol=1e-8)
    close(d["ef"], np.linalg.solve(J.T @ J / B + LAM * np.eye(P), J.mean(0)), rtol=1e-7, atol=1e-10)
    s = logit_sq_norms(p, b)
    close(d["ief"], dense_sample_space(J, s, 1e-6), rtol=1e-8)
    close(J @ d["ief"], s, rtol=0, atol=1e-3 * float(s.max()))
    cot = p.jit(lambda params, batch: p.oracle(params, batch).sampled_logit_grads(k))(p.params0, b)
    Jh = np.concatenate([dense_cotangent_rows(p, b, cot[i]) for i in range(k)])
    F_hat = Jh.T @ Jh / (B * k)  # Eqn 47, mean convention
    close(d["sf"], np.linalg.solve(F_hat + LAM * np.eye(P), J.mean(0)), rtol=1e-7, atol=1e-10)  # Eqn 48
    close(d["fngd_shared"], d["ef"], rtol=1e-12, atol=1e-14)
    spans = spans_of(p)
    close(d["fngd"], dense_weighted(J, spans, dense_coefficients(J, spans)), rtol=1e-9)
    for a, c in spans:  # block by block the damped EF natural gradient of the layer (Woodbury)
        Jl = J[:, a:c]
        close(d["fngd"][a:c], np.linalg.solve(Jl.T @ Jl / B + LAM * np.eye(c - a), Jl.mean(0)), rtol=1e-7, atol=1e-10)


def test_near_duplicate_filter_removes_repeated_samples_from_the_solve() -> None:
    """Repeated samples: with the filter (iEF code, |cos| > 0.99) each repeat is dropped and the
    direction is Eqn 8 (Eqn 5 for EF) on the distinct samples, with B lambda of the full batch."""
    p = problem("tiny-ce")
    b = p.device_batch(0)
    idx = jnp.asarray([0, 1, 2, 3, 0, 5, 1, 7, 8, 3, 10, 11, 12, 13, 14, 15])
    dup = Batch(b.x[idx], b.y[idx], b.index[idx], b.noise[:, idx])
    unique = np.asarray([0, 1, 2, 3, 5, 7, 8, 10, 11, 12, 13, 14, 15])
    lam = 1e-4
    d = directions(
        p,
        dup,
        {
            "ief": ("ief", {"damping": lam}),
            "ef": ("ef", {"damping": lam}),
            "ief_off": ("ief", {"damping": lam, "dedup_threshold": None}),
        },
    )
    J = dense_jacobian(p, dup)
    Ju = J[unique]
    for name, t in (("ief", logit_sq_norms(p, dup)), ("ef", np.ones(16))):
        close(d[name], Ju.T @ np.linalg.solve(Ju @ Ju.T + 16 * lam * np.eye(len(unique)), t[unique]), rtol=1e-8)
    assert not np.allclose(d["ief_off"], d["ief"], rtol=1e-3)
    adapter, hp = make("ief", damping=lam)
    _, _, stats = p.make_step(adapter)(p.params0, adapter.init(p, hp), dup)
    assert int(stats["kept_samples"]) == len(unique)


# --------------------------------------------------------------------------- the jitted step


def test_step_moves_along_the_direction_with_the_scheduled_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """theta' = theta - stats['lr'] * direction; with the normalised update and linear decay the
    step length is lr (T - t) / T for step t of T = the step budget at init (the update is shared
    by EF, iEF and SF; parity checks it for all three)."""
    name = "ef"
    p = problem("tiny-mse")
    monkeypatch.setattr(p, "step_budget", 4)
    adapter, hp = make(name, lr=0.2, normalise_update=True, lr_decay="linear")
    state = adapter.init(p, hp)
    monkeypatch.setattr(p, "step_budget", 1000)  # the state keeps the budget it was created with
    step, get_direction = p.make_step(adapter), p.make_direction(adapter)
    params = p.params0
    d0 = get_direction(params, state, p.device_batch(0))
    for t in range(5):
        b = p.device_batch(t)
        d = get_direction(params, state, b)
        new, state, stats = step(params, state, b)
        close(new, params - stats["lr"] * d, rtol=1e-12, atol=1e-14)
        length = 0.2 * max(4 - t, 0) / 4
        close(np.linalg.norm(np.asarray(new - params)), length, rtol=1e-9, atol=0)
        close(stats["lr_schedule"], length, rtol=1e-12, atol=0)
        params = new
    assert int(state.step) == 5 and step.compile_count == 1
    # Constant, unnormalised: the plain lr along the same direction (the schedule does not enter it).
    adapter, hp = make(name, lr=0.2, normalise_update=False, lr_decay="constant")
    new, _, stats = p.make_step(adapter)(p.params0, adapter.init(p, hp), p.device_batch(0))
    assert stats["lr"] == 0.2
    close(new, p.params0 - 0.2 * d0, rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "overrides", "backward"),
    [
        ("ef", {}, 1),
        ("ief", {}, 1),
        ("sf", {"samples": 3}, 4),
        ("fngd", {}, 1),
        ("fngd", {"coefficients": "shared"}, 1),
    ],
)
def test_one_compile_and_the_torch_passes_on_every_call(name: str, overrides: dict[str, Any], backward: int) -> None:
    """Each variant compiles once (FNGD: across the end of its solve epoch too) and books its
    passes on every call: one forward, the true-label backward, one backward per label draw."""
    p = problem("tiny-ce")
    adapter, hp = make(name, **overrides)
    state, params = adapter.init(p, hp), p.params0
    step = p.make_step(adapter)
    per_epoch = p.n_train // p.batch_size
    for t in range(per_epoch + 2):
        before = p.counters.snapshot()
        params, state, _ = step(params, state, p.device_batch(t))
        assert delta(before, p.counters.snapshot()) == {"forward": 1, "backward": backward}, t
    assert step.compile_count == 1 and step.traces == 1


def test_fngd_float32_stays_float32_across_the_end_of_the_solve_epoch() -> None:
    """(The first steps of every adapter are checked by tests/test_jax_oracle.py.)"""
    p = problem("tiny-ce", "float32")
    adapter, hp = make("fngd")
    state, params = adapter.init(p, hp), p.params0
    step = p.make_step(adapter)
    for t in range(p.n_train // p.batch_size + 1):
        params, state, stats = step(params, state, p.device_batch(t))
    leaves = [x for x in jax.tree_util.tree_leaves((params, state, stats)) if isinstance(x, jax.Array)]
    floats = [x.dtype for x in leaves if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and set(floats) == {jnp.dtype(jnp.float32)}, floats
    assert int(stats["solves"]) == 0 and np.isfinite(float(stats["loss"]))


@pytest.mark.parametrize("name", NAMES)
def test_adapter_contract_basics(name: str) -> None:
    p = problem("tiny-ce")
    adapter, hp = make(name)
    state = adapter.init(p, hp)
    assert type(state).__name__.endswith("State") and state[0] == hp
    b = p.device_batch(0)
    step = p.make_step(adapter)
    d_jit = p.make_direction(adapter)(p.params0, state, b)
    if name == "fngd":  # harness.api.direction calls it eagerly; FNGD's lax.cond must run eagerly too
        close(adapter.direction(p, p.params0, state, b), d_jit, rtol=1e-10)
    assert d_jit.shape == p.params0.shape and bool(jnp.all(jnp.isfinite(d_jit)))
    new, state2, stats = step(p.params0, state, b)
    assert {"loss", "lr", "damping"} <= set(stats)
    assert all(np.isfinite(float(v)) for v in stats.values()), stats
    loss = jnp.mean(likelihoods.per_sample_loss(p.likelihood, p.model.apply(p.params0, b.x), b.y))
    close(stats["loss"], loss, rtol=1e-12)
    assert int(state2.step) == int(state.step) + 1 == 1
    restored = pickle.loads(pickle.dumps(state2))
    n1, _, _ = step(new, state2, p.device_batch(1))
    n2, _, _ = step(new, restored, p.device_batch(1))
    np.testing.assert_array_equal(np.asarray(n1), np.asarray(n2))
    assert step.compile_count == 1


# --------------------------------------------------------------------------- FNGD


def _run(p: Any, adapter: Any, hp: Any, steps: int) -> tuple[Any, list[tuple[Any, Any, Batch[jax.Array], Any]]]:
    step = p.make_step(adapter)
    state, params = adapter.init(p, hp), p.params0
    history = []
    for t in range(steps):
        b = p.device_batch(t)
        new, new_state, stats = step(params, state, b)
        history.append((params, state, b, stats))
        params, state = new, new_state
    assert step.compile_count == 1
    return state, history


def test_fngd_stores_coefficients_by_sample_and_reuses_them_without_solving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Epoch 1 solves and writes each sample's coefficients into the table (``.at[].set``);
    later steps look them up (unseen samples: the block mean) and never execute a solve."""
    p = problem("tiny-ce")
    executed: list[int] = []
    real = ss.damped_solve

    def counted_solve(k: jax.Array, rhs: jax.Array, shift: Any, keep: Any = None) -> Any:
        jax.debug.callback(lambda n: executed.append(int(n)), k.shape[0])
        return real(k, rhs, shift, keep)

    monkeypatch.setattr(ss, "damped_solve", counted_solve)
    adapter, hp = make("fngd", damping=LAM)
    per_epoch = p.n_train // p.batch_size
    spans = spans_of(p)
    G = len(spans)
    state, history = _run(p, adapter, hp, per_epoch + 3)
    jax.effects_barrier()
    assert executed == [G] * per_epoch  # one batched solve of G systems per solve step, none after
    assert [int(h[3]["solves"]) for h in history] == [G] * per_epoch + [0] * 3
    assert int(state.solve_count) == G * per_epoch
    residuals = np.array([float(h[3]["solve_residual"]) for h in history])
    assert np.all(residuals[:per_epoch] < 1e-12) and np.all(np.isnan(residuals[per_epoch:]))
    table = np.asarray(state.table)
    for params, _, b, _ in (history[0], history[per_epoch - 1]):
        close(table[np.asarray(b.index)].T, dense_coefficients(dense_jacobian(p, b, params), spans), rtol=1e-9)
    seen = np.concatenate([batch_indices(p.n_train, p.batch_size, p.seed, t) for t in range(per_epoch)])
    unseen = sorted(set(range(p.n_train)) - set(seen.tolist()))
    assert len(unseen) == p.n_train % p.batch_size > 0
    assert np.asarray(state.seen).sum() == p.n_train - len(unseen) and not np.asarray(state.seen)[unseen].any()
    fill = table[np.asarray(state.seen)].mean(axis=0)  # every seen sample stored exactly once

    def expected_coefficients(index: jax.Array) -> np.ndarray:
        keys = np.asarray(index)
        return np.where(np.isin(keys, unseen)[:, None], fill[None, :], table[keys]).T

    get_direction = p.make_direction(adapter)
    for params, st, b, _ in history[per_epoch:]:
        d = get_direction(params, st, b)
        close(d, dense_weighted(dense_jacobian(p, b, params), spans, expected_coefficients(b.index)), rtol=1e-9)
    # A later batch holding a sample never seen while solving uses the mean coefficient for it.
    params, st, b, _ = history[per_epoch]
    forced = Batch(b.x, b.y, b.index.at[0].set(unseen[0]), b.noise)
    c = expected_coefficients(forced.index)
    assert np.array_equal(c[:, 0], fill)
    d = get_direction(params, st, forced)
    close(d, dense_weighted(dense_jacobian(p, forced, params), spans, c), rtol=1e-9)


def test_fngd_iteration_indexing_reuses_the_coefficients_of_the_same_position() -> None:
    p = problem("tiny-ce")
    adapter, hp = make("fngd", damping=LAM, indexing="iteration", coefficients="shared")
    per_epoch = p.n_train // p.batch_size
    state, history = _run(p, adapter, hp, per_epoch + 1)
    assert state.table.shape == (per_epoch, p.batch_size, 1)
    params0, _, b0, _ = history[0]
    spans = [(0, p.num_params)]
    close(state.table[0].T, dense_coefficients(dense_jacobian(p, b0, params0), spans), rtol=1e-9)
    params, st, b, stats = history[per_epoch]
    assert int(stats["solves"]) == 0
    d = p.make_direction(adapter)(params, st, b)
    close(d, dense_jacobian(p, b, params).T @ state.table[0][:, 0], rtol=1e-9)


def test_fngd_base_optimizer_is_optax_sgd_on_the_preconditioned_gradient() -> None:
    """u = d + wd theta, heavy-ball trace, theta - lr * trace: optax's coupled-L2 SGD fed with d."""
    p = problem("tiny-ce")
    adapter, hp = make("fngd", lr=0.05, momentum=0.9, weight_decay=1e-3)
    state, params = adapter.init(p, hp), p.params0
    step, get_direction = p.make_step(adapter), p.make_direction(adapter)
    opt = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(0.05, momentum=0.9))
    ref, opt_state = p.params0, opt.init(p.params0)
    for t in range(p.n_train // p.batch_size + 2):  # across the end of the solve epoch
        b = p.device_batch(t)
        updates, opt_state = opt.update(get_direction(params, state, b), opt_state, ref)
        ref = optax.apply_updates(ref, updates)
        params, state, stats = step(params, state, b)
        close(params, ref, rtol=1e-12, atol=1e-14)
        assert stats["lr"] == 0.05


def test_fngd_with_several_solve_epochs() -> None:
    p = problem("tiny-ce")
    adapter, hp = make("fngd", solve_epochs=2)
    per_epoch = p.n_train // p.batch_size
    _, history = _run(p, adapter, hp, 2 * per_epoch + 1)
    assert [int(h[3]["solves"]) > 0 for h in history] == [True] * (2 * per_epoch) + [False]


def test_fngd_books_each_branch_by_the_path_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dense fallback with shared coefficients: solving costs a per-sample pass, reusing a weighted
    backward (as in torch); the jitted step books whichever branch ran, call by call."""
    p = problem("tiny-ce")
    monkeypatch.setattr(shared_sample_space, "uses_taps", lambda layout: False)
    adapter, hp = make("fngd", coefficients="shared")
    state, params = adapter.init(p, hp), p.params0
    step = p.make_step(adapter)
    per_epoch = p.n_train // p.batch_size
    passes = []
    for t in range(per_epoch + 2):
        before = p.counters.snapshot()
        params, state, _ = step(params, state, p.device_batch(t))
        passes.append(delta(before, p.counters.snapshot()))
    assert passes == [{"forward": 1, "per_sample": 1}] * per_epoch + [{"forward": 1, "backward": 1}] * 2
    assert step.compile_count == 1
