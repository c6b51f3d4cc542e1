"""The torch step-overhead fixes give exactly the numbers of the code they replaced
(docs/profiling.md): dual-tensor JVPs, taps on the pre-activations themselves, one softmax per
oracle, host scalars in AdamQLR, one-array concatenation; and the step-cost benchmark's turns."""

from __future__ import annotations

import torch
from torch.func import jvp as func_jvp

from backends.torch import build_problem, likelihoods
from backends.torch.models import Taps
from backends.torch.ops import HOST_SCALAR_OPS, TORCH_OPS
from backends.torch.optimizers import adamqlr as adamqlr_module
from benchmarks import step_cost
from suites import get_suite


def _problem(suite: str = "tiny-ce"):  # type: ignore[no-untyped-def]
    return build_problem(get_suite(suite), seed=0, dtype="float32", device="cpu")


def test_oracle_jvp_equals_torch_func_jvp_bitwise_also_under_vmap() -> None:
    p = _problem()
    batch = p.device_batch(0)
    oracle = p.oracle(p.params0, batch)
    vs = torch.randn(2, p.num_params, generator=torch.Generator().manual_seed(0))

    def reference(v: torch.Tensor) -> torch.Tensor:
        return func_jvp(lambda q: p.fmodel(q, batch.x), (p.params0,), (v,))[1]

    assert torch.equal(oracle.jvp(vs[0]), reference(vs[0]))
    # Inside torch.func.vmap (K-FAC's two JVPs) the oracle falls back to torch.func.jvp.
    assert torch.equal(torch.func.vmap(oracle.jvp)(vs), torch.stack([reference(v) for v in vs]))
    assert p.counters.snapshot()["jvp"] == 2


def test_taps_differentiate_the_pre_activations_as_the_zero_perturbations_did() -> None:
    p = _problem()
    batch = p.device_batch(1)
    leaf = p.params0.requires_grad_(True)
    taps = Taps()
    z = p.fmodel(leaf, batch.x, taps)
    assert taps.perturbations is taps.outputs and len(taps.outputs) == len(p.layout.tapped)
    w = torch.randn_like(z)
    grads = torch.autograd.grad(z, [leaf, *taps.outputs], w)
    # The former form: a zero tensor added to every tapped pre-activation, differentiated.
    zeros: list[torch.Tensor] = []

    class Perturbed(Taps):
        def record(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            self.inputs.append(a)
            zeros.append(torch.zeros_like(s, requires_grad=True))
            return s + zeros[-1]

    z2 = p.fmodel(leaf, batch.x, Perturbed())
    expected = torch.autograd.grad(z2, [leaf, *zeros], w)
    assert torch.equal(z, z2)
    assert all(torch.equal(a, b) for a, b in zip(grads, expected, strict=True))


def test_one_softmax_per_oracle_gives_the_same_closed_forms() -> None:
    p = _problem()
    oracle = p.oracle(p.params0, p.device_batch(2))
    z, y = oracle.logits, oracle.batch.y
    assert torch.equal(oracle.logit_grads(), likelihoods.logit_grads("softmax_ce", z, y))
    targets = oracle.sample_targets(3)
    assert torch.equal(targets, likelihoods.sample_targets("softmax_ce", z, oracle.batch.noise[:3]))
    stacked = torch.stack([likelihoods.logit_grads("softmax_ce", z, t) for t in targets])
    assert torch.equal(oracle.sampled_logit_grads(3), stacked)
    u = torch.randn_like(z)
    assert torch.equal(oracle.output_hessian_apply(u), likelihoods.output_hessian_apply("softmax_ce", z, u))
    # mse: no probabilities, targets (k, B, C) broadcast against z.
    targets = torch.stack([z + 1, z - 2])
    assert torch.equal(likelihoods.logit_grads("mse", z, targets), torch.stack([z - targets[0], z - targets[1]]))


def test_adamqlr_host_scalars_give_the_device_scalar_trajectory(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def trajectory() -> tuple[torch.Tensor, list[dict[str, float]]]:
        p = _problem()
        adapter = adamqlr_module.AdamQLR()
        params, state = p.params0, adapter.init(p, adamqlr_module.AdamQLR.resolve())
        history = []
        for t in range(6):
            params, state, stats = adapter.step(p, params, state, p.device_batch(t))
            history.append({k: float(v) for k, v in stats.items()})
        return params, history

    assert adamqlr_module._scalar_ops(_problem()) is HOST_SCALAR_OPS
    with monkeypatch.context() as m:  # under torch.compile: device scalars (no graph break)
        m.setattr(torch.compiler, "is_compiling", lambda: True)
        assert adamqlr_module._scalar_ops(_problem()) is TORCH_OPS
    host = trajectory()
    monkeypatch.setattr(adamqlr_module, "_scalar_ops", lambda problem: TORCH_OPS)
    device = trajectory()
    assert torch.equal(host[0], device[0])
    assert host[1] == device[1]
    # The state keeps lambda as a 0-d float64 tensor on both paths (compiled steps guard on it).
    p = _problem()
    adapter = adamqlr_module.AdamQLR()
    state = adapter.step(p, p.params0, adapter.init(p, adamqlr_module.AdamQLR.resolve()), p.device_batch(0))[1]
    assert torch.is_tensor(state.damping) and state.damping.dtype == torch.float64 and state.damping.ndim == 0


def test_concat_of_one_array_is_that_array() -> None:
    x = torch.arange(3.0)
    assert TORCH_OPS.concat([x]) is x
    assert torch.equal(TORCH_OPS.concat([x, x]), torch.cat([x, x]))


def test_step_cost_turns_cover_every_step_once_in_blocks() -> None:
    turns = step_cost._turns(25, 10)
    assert [list(t) for t in turns] == [list(range(0, 10)), list(range(10, 20)), list(range(20, 25))]
    assert [list(t) for t in step_cost._turns(3, 1)] == [[0], [1], [2]]


def test_logit_gradients_and_quadratic_form_equal_the_forms_they_replaced_bitwise() -> None:
    """``r = p - onehot(y)`` by the scalar scatter and ``u^T Q u`` with ``p * u`` computed once
    (docs/profiling.md, "A torch step's fixed cost"): the former expressions' bits, for one set
    of labels and for stacked draws broadcast over the batch."""
    gen = torch.Generator().manual_seed(3)
    z, u = torch.randn(32, 10, generator=gen), torch.randn(32, 10, generator=gen)
    p = likelihoods.probabilities(z)
    for y in (torch.randint(0, 10, (32,), generator=gen), torch.randint(0, 10, (3, 32), generator=gen)):
        r = p.expand(*y.shape, 10)
        former = r.scatter_add(-1, y.unsqueeze(-1), -torch.ones_like(r[..., :1]))
        assert torch.equal(likelihoods.logit_grads("softmax_ce", z, y, p), former)
    pu = (p * u).sum(dim=-1)
    assert torch.equal(likelihoods.output_quadratic("softmax_ce", z, u, p), (p * u * u).sum(dim=-1) - pu * pu)


def test_adamqlr_host_update_scales_by_a_python_float_as_by_a_float32_tensor() -> None:
    """AdamQLR's host step scales ``d`` by ``float(s)``; the kernel rounds it to float32 as the
    0-d tensor of ``adamqlr_maths.update`` was, so the parameters are the same bits."""
    gen = torch.Generator().manual_seed(4)
    params, d = torch.randn(4096, generator=gen), torch.randn(4096, generator=gen)
    for s in (0.0123456789012345, -3.3e-7, 1.7e2, 2.0**-30 / 3):
        assert torch.equal(params + float(s) * d, params + torch.tensor(s, dtype=torch.float32) * d)
