"""EF, iEF and SF on PyTorch: directions against dense formulas, known-exact cases, schedules,
sampled labels, passes, training, and the adapter contract (all four sample-space methods)."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import pytest
import torch

from backends import schedules
from backends.spec import Batch, HyperparameterError
from backends.torch import build_problem, likelihoods
from backends.torch.ops import TORCH_OPS
from backends.torch.optimizers import builtin_adapters
from backends.torch.optimizers._gram_step import host_scheduled_update
from harness import api
from suites import get_suite
from tests.fixtures_torch_sample_space import CONV, dense_ggn, dense_jacobian, dense_per_sample_grads_for

RTOL = 1e-8


def make(name: str, **overrides):  # type: ignore[no-untyped-def]
    cls = builtin_adapters()[name]
    return cls(), cls.resolve(overrides)


def problem(suite, seed: int = 3, dtype: str = "float64"):  # type: ignore[no-untyped-def]
    return build_problem(get_suite(suite) if isinstance(suite, str) else suite, seed=seed, dtype=dtype)


def direction(name: str, p, batch, **overrides) -> torch.Tensor:  # type: ignore[no-untyped-def]
    adapter, hp = make(name, **overrides)
    return adapter.direction(p, p.params0, adapter.init(p, hp), batch)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64)


def dense_sample_space(J: torch.Tensor, t: torch.Tensor, lam: float) -> torch.Tensor:
    """``J^T (J J^T + B lambda I)^{-1} t``."""
    B = J.shape[0]
    return J.T @ torch.linalg.solve(J @ J.T + B * lam * eye(B), t)


# --------------------------------------------------------------------------- directions


@pytest.mark.parametrize("lam", [1e-2, 1e-6])
def test_ef_direction_is_eqn5_and_the_damped_empirical_fisher_natural_gradient(tiny_suite: str, lam: float) -> None:
    p = problem(tiny_suite)
    b = p.device_batch(1)
    J = dense_jacobian(p, b)
    B, P = J.shape
    d = direction("ef", p, b, damping=lam, dedup_threshold=None)
    torch.testing.assert_close(d, dense_sample_space(J, torch.ones(B, dtype=J.dtype), lam), rtol=RTOL, atol=1e-12)
    if lam == 1e-2:  # parameter space (F~ + lambda I)^{-1} g, F~ = J^T J / B: the Woodbury identity
        g = J.mean(0)
        torch.testing.assert_close(d, torch.linalg.solve(J.T @ J / B + lam * eye(P), g), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("lam", [1e-2, 1e-6])
def test_ief_direction_is_eqn8(tiny_suite: str, lam: float) -> None:
    p = problem(tiny_suite)
    b = p.device_batch(2)
    J = dense_jacobian(p, b)
    z = p.fmodel(p.params0, b.x).detach().requires_grad_(True)
    (r,) = torch.autograd.grad(likelihoods.per_sample_loss(p.likelihood, z, b.y).sum(), z)
    s = r.pow(2).sum(-1)
    d = direction("ief", p, b, damping=lam, dedup_threshold=None)
    torch.testing.assert_close(d, dense_sample_space(J, s, lam), rtol=RTOL, atol=1e-12)
    # To first order every sample's loss falls by lr * s_n (Eqn 7): J d = K (K + B lambda)^{-1} s ~ s.
    if lam == 1e-6:
        torch.testing.assert_close(J @ d, s, rtol=0, atol=1e-3 * float(s.max()))


@pytest.mark.parametrize("k", [1, 3])
def test_sf_direction_is_the_damped_sampled_fisher_natural_gradient(tiny_suite: str, k: int) -> None:
    p = problem(tiny_suite)
    b = p.device_batch(0)
    lam = 1e-2
    o = p.oracle(p.params0, b)
    cot = o.sampled_logit_grads(k)
    Jh = torch.cat([dense_per_sample_grads_for(p, b, cot[i]) for i in range(k)])
    J = dense_jacobian(p, b)
    B, P = J.shape
    F_hat = Jh.T @ Jh / (B * k)  # Eqn 47, mean convention
    expected = torch.linalg.solve(F_hat + lam * eye(P), J.mean(0))  # Eqn 48
    d = direction("sf", p, b, damping=lam, samples=k)
    torch.testing.assert_close(d, expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", ["ef", "ief", "sf"])
def test_directions_on_a_conv_model_match_dense_formulas(name: str) -> None:
    p = problem(CONV)
    b = p.device_batch(0)
    J = dense_jacobian(p, b)
    B, P = J.shape
    lam = 1e-3
    extra = {} if name == "sf" else {"dedup_threshold": None}
    d = direction(name, p, b, damping=lam, **extra)
    o = p.oracle(p.params0, b)
    if name == "ef":
        ref = dense_sample_space(J, torch.ones(B, dtype=J.dtype), lam)
    elif name == "ief":
        ref = dense_sample_space(J, o.logit_grads().pow(2).sum(-1), lam)
    else:
        Jh = dense_per_sample_grads_for(p, b, o.sampled_logit_grads(1)[0])
        ref = torch.linalg.solve(Jh.T @ Jh / B + lam * eye(P), J.mean(0))
    torch.testing.assert_close(d, ref, rtol=1e-7, atol=1e-10)


def test_ief_is_gauss_newton_and_the_natural_gradient_on_scalar_least_squares() -> None:
    """iEF paper App. A (Eqns 18, 20): for scalar-output least squares F* = G = F, so in the
    undamped limit (B < P) iEF's direction is the natural gradient G^+ g."""
    p = problem("tiny-mse")
    b = p.device_batch(0)
    B, P = b.x.shape[0], p.num_params
    assert B < P
    G = dense_ggn(p, b)
    g = dense_jacobian(p, b).mean(0)
    lam = 1e-10
    d_ief = direction("ief", p, b, damping=lam, dedup_threshold=None)
    d_ng = torch.linalg.solve(G + lam * eye(P), g)
    # iEF damps in sample space (K + B lam I) vs NG's (G + lam I): both O(lam) from the limit.
    assert rel_err(d_ief, d_ng) < 1e-5
    d_pinv = torch.linalg.pinv(G, rtol=1e-10) @ g
    assert rel_err(d_ief, d_pinv) < 1e-6
    # damping = 0 is allowed for iEF: the undamped Eqn 8 (K is nonsingular here) is G^+ g.
    assert rel_err(direction("ief", p, b, damping=0.0, dedup_threshold=None), d_pinv) < 1e-7
    # EF is not the natural gradient here: the check above can fail.
    d_ef = direction("ef", p, b, damping=lam, dedup_threshold=None)
    assert torch.linalg.vector_norm(d_ef / d_ef.norm() - d_ng / d_ng.norm()) > 0.1


def test_near_duplicate_filter_removes_repeated_samples_from_the_solve() -> None:
    """A batch holding repeated samples: with the filter (iEF code, |cos| > 0.99) each repeat is
    dropped and the direction is Eqn 8 on the distinct samples; without it, the repeats count."""
    p = problem("tiny-ce")
    b = p.device_batch(0)
    idx = torch.tensor([0, 1, 2, 3, 0, 5, 1, 7, 8, 3, 10, 11, 12, 13, 14, 15])
    dup = Batch(b.x[idx], b.y[idx], b.index[idx], b.noise[:, idx])
    lam = 1e-4
    unique = [0, 1, 2, 3, 5, 7, 8, 10, 11, 12, 13, 14, 15]  # first occurrences
    for name in ("ief", "ef"):
        adapter, hp = make(name, damping=lam, dedup_threshold=0.99)
        d = adapter.direction(p, p.params0, adapter.init(p, hp), dup)
        J = dense_jacobian(p, dup)
        o = p.oracle(p.params0, dup)
        t = o.logit_grads().pow(2).sum(-1) if name == "ief" else torch.ones(16, dtype=torch.float64)
        Ju, tu = J[unique], t[unique]
        # The system keeps B lambda of the full batch (the filter removes rows, not the scale).
        ref = Ju.T @ torch.linalg.solve(Ju @ Ju.T + 16 * lam * eye(len(unique)), tu)
        torch.testing.assert_close(d, ref, rtol=RTOL, atol=1e-12)
        _, _, stats = adapter.step(p, p.params0, adapter.init(p, hp), dup)
        assert int(stats["kept_samples"]) == len(unique)
        d_off = direction(name, p, dup, damping=lam, dedup_threshold=None)
        assert not torch.allclose(d_off, d, rtol=1e-3)


# --------------------------------------------------------------------------- steps and schedules


def test_schedules_linear_decay_and_normalised_step() -> None:
    assert schedules.scheduled_lr(0.1, "constant", 7, 10) == 0.1
    assert [schedules.scheduled_lr(1.0, "linear", t, 4) for t in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    step = torch.tensor(2.0)
    assert float(schedules.scheduled_lr(1.0, "linear", step, 4)) == 0.5  # traced-style arguments
    assert schedules.step_size(0.5, 4.0, normalise=True) == pytest.approx(0.125)
    assert schedules.step_size(0.5, 4.0, normalise=False) == 0.5
    with pytest.raises(ValueError, match="unknown learning-rate decay"):
        schedules.scheduled_lr(1.0, "cosine", 0, 4)


@pytest.mark.parametrize("name", ["ef", "ief", "sf"])
def test_step_moves_along_the_direction_with_the_scheduled_length(tiny_suite: str, name: str) -> None:
    """``step_along_direction``: theta' = theta - stats['lr'] * direction; with the normalised
    update and linear decay the step length is lr (T - t) / T for step t of T = step_budget."""
    p = problem(tiny_suite)
    p.step_budget = 4
    adapter, hp = make(name, lr=0.2, normalise_update=True, lr_decay="linear")
    assert adapter.capabilities.step_along_direction
    state = adapter.init(p, hp)
    params = p.params0
    for t in range(3):
        b = p.device_batch(t)
        d = adapter.direction(p, params, state, b)
        new, state, stats = adapter.step(p, params, state, b)
        torch.testing.assert_close(new, params - stats["lr"] * d, rtol=1e-12, atol=1e-14)
        assert float(torch.linalg.vector_norm(new - params)) == pytest.approx(0.2 * (4 - t) / 4, rel=1e-9)
        assert stats["lr_schedule"] == pytest.approx(0.2 * (4 - t) / 4)
        assert float(stats["update_norm"]) == pytest.approx(0.2 * (4 - t) / 4, rel=1e-9)
        params = new
    assert state.step == 3
    # Constant, unnormalised: the plain lr.
    adapter, hp = make(name, lr=0.2, normalise_update=False, lr_decay="constant")
    state = adapter.init(p, hp)
    b = p.device_batch(0)
    new, _, stats = adapter.step(p, p.params0, state, b)
    assert stats["lr"] == 0.2
    torch.testing.assert_close(new, p.params0 - 0.2 * adapter.direction(p, p.params0, state, b))


def test_defaults_and_conventions_of_the_cards() -> None:
    ef, ief, sf = (builtin_adapters()[n] for n in ("ef", "ief", "sf"))
    assert ief.resolve().lr == pytest.approx(50 / 64)  # paper MLP: lr 50 at batch 64, code's mean loss
    assert ief.resolve(preset="paper-lora").lr == pytest.approx(100 / 32)
    assert ief.resolve(preset="paper-lora").damping == pytest.approx(32 * 1e-7)
    assert ief.resolve().lr_decay == "constant" and not ief.resolve().normalise_update
    for cls in (ef, sf):
        hp = cls.resolve()
        assert hp.normalise_update and hp.lr_decay == "linear"
        assert cls.resolve(preset="paper").lr == 0.01
    assert sf.capabilities.samples_labels and not ef.capabilities.samples_labels
    with pytest.raises(HyperparameterError, match="samples must be <= 4"):
        sf.resolve({"samples": 5})
    with pytest.raises(HyperparameterError, match="dedup_threshold"):
        ief.resolve({"dedup_threshold": 1.5})
    assert ief.resolve({"dedup_threshold": "none"}).dedup_threshold is None


# --------------------------------------------------------------------------- labels, passes


def test_sf_labels_come_from_the_seeded_batch_noise() -> None:
    p1, p2 = problem("tiny-ce", seed=5), problem("tiny-ce", seed=5)
    labels = [p1.oracle(p1.params0, p1.device_batch(s)).sample_targets(1) for s in range(3)]
    again = p2.oracle(p2.params0, p2.device_batch(1)).sample_targets(1)
    assert torch.equal(labels[1], again)
    assert not torch.equal(labels[0], labels[1]) and not torch.equal(labels[1], labels[2])
    d1 = direction("sf", p1, p1.device_batch(1))
    assert torch.equal(d1, direction("sf", p2, p2.device_batch(1)))
    b = p1.device_batch(1)
    other_noise = Batch(b.x, b.y, b.index, p1.device_batch(2).noise)
    assert not torch.allclose(d1, direction("sf", p1, other_noise))


def test_sf_under_torch_compile_takes_the_gradient_first_with_the_same_passes_and_direction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compiled, SF runs the parameter-gradient backward before the taps-only passes (Dynamo
    cannot trace a taps-only pass first): the same passes and direction as the eager step."""
    p = problem("tiny-ce")
    b = p.device_batch(0)
    eager = direction("sf", p, b, samples=2)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    before = p.counters.snapshot()
    compiled_path = direction("sf", p, b, samples=2)
    after = p.counters.snapshot()
    assert {k: after[k] - before[k] for k in after} == {
        "forward": 1,
        "backward": 3,
        "jvp": 0,
        "vjp": 0,
        "per_sample": 0,
    }
    assert not torch.equal(compiled_path, eager)  # another order of sums ...
    torch.testing.assert_close(compiled_path, eager, rtol=1e-10, atol=1e-13)  # ... the same direction


@pytest.mark.parametrize(("name", "overrides", "backward"), [("ef", {}, 1), ("ief", {}, 1), ("sf", {"samples": 3}, 4)])
def test_passes_per_step(name: str, overrides: dict, backward: int) -> None:
    p = problem("tiny-ce")
    adapter, hp = make(name, **overrides)
    state = adapter.init(p, hp)
    before = p.counters.snapshot()
    adapter.step(p, p.params0, state, p.device_batch(0))
    after = p.counters.snapshot()
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {"forward": 1, "backward": backward, "jvp": 0, "vjp": 0, "per_sample": 0}


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", ["ef", "ief", "sf", "fngd"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adapter_contract_basics(name: str, dtype: str) -> None:
    p = problem("tiny-ce", dtype=dtype)
    adapter, hp = make(name)
    state = adapter.init(p, hp)
    assert type(state).__name__.endswith("State") and state[0] == hp
    params = p.params0
    params_copy = params.clone()
    b = p.device_batch(0)
    b_copy = [t.clone() for t in b]
    d = adapter.direction(p, params, state, b)
    assert d.shape == params.shape and d.dtype == params.dtype and torch.isfinite(d).all()
    new, state2, stats = adapter.step(p, params, state, b)
    assert new.shape == params.shape and new.dtype == params.dtype
    assert torch.equal(params, params_copy), "params mutated in place"
    assert all(torch.equal(x, y) for x, y in zip(b, b_copy, strict=True)), "batch mutated"
    assert not torch.equal(new, params)
    assert {"loss", "lr", "damping"} <= set(stats)
    for key, value in stats.items():
        assert math.isfinite(float(value)), key
    torch.testing.assert_close(torch.as_tensor(float(stats["loss"]), dtype=params.dtype), p.oracle(params, b).loss())
    # direction() does not advance the state; step() does, and the state pickles.
    assert adapter.direction(p, params, state, b).equal(d)
    assert state2.step == state.step + 1 == 1
    restored = pickle.loads(pickle.dumps(state2))
    n1, _, _ = adapter.step(p, new, state2, p.device_batch(1))
    n2, _, _ = adapter.step(p, new, restored, p.device_batch(1))
    torch.testing.assert_close(n1, n2, rtol=0, atol=0)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", ["ef", "ief", "sf"])
@pytest.mark.parametrize(("suite", "factor"), [("digits-mlp", 0.35), ("diabetes-mlp", 0.6)])
def test_defaults_train(name: str, suite: str, factor: float) -> None:
    r = api.run(suite, name, steps=200, device="cpu", stop_at_target=False)
    assert r.status in ("budget_exhausted", "target_reached", "done"), r.error
    assert r.final_train_loss is not None and r.initial_train_loss is not None
    assert r.final_train_loss < factor * r.initial_train_loss, (r.initial_train_loss, r.final_train_loss)
    assert r.passes_per_step["per_sample"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_host_scheduled_update_is_the_shared_update_bit_for_bit(dtype: torch.dtype) -> None:
    """EF, iEF and SF on a CPU device take their update's scalars on the host
    (``_gram_step.host_scheduled_update``): the same parameters and statistics, bit for bit, as
    ``schedules.scheduled_update`` on 0-d tensors, normalised or not, constant or decayed."""
    gen = torch.Generator().manual_seed(0)
    compared = 0
    for normalise in (True, False):
        for decay in ("constant", "linear"):
            hp = SimpleNamespace(lr=0.0123, lr_decay=decay, normalise_update=normalise)
            for step in (0, 7, 99):
                params = torch.randn(1000, generator=gen, dtype=dtype)
                direction = torch.randn(1000, generator=gen, dtype=dtype) * 10.0 ** (step % 5 - 2)
                want, want_stats = schedules.scheduled_update(TORCH_OPS, hp, params, direction, step, 100)
                got, got_stats = host_scheduled_update(hp, params, direction, step, 100)
                assert torch.equal(got, want)
                assert got_stats.keys() == want_stats.keys()
                for key, value in want_stats.items():
                    assert float(got_stats[key]) == float(value), key
                compared += 1
    assert compared == 12
