"""The PyTorch oracle against dense autograd references (float64, tiny suites)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from backends.torch import build_problem, likelihoods, models
from suites import get_suite

RTOL = 1e-10


def problem_and_batch(name: str, step: int = 0):  # type: ignore[no-untyped-def]
    p = build_problem(get_suite(name), seed=3, dtype="float64")
    return p, p.device_batch(step)


def dense_output_jacobian(p, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``(B, C, P)`` by reverse-mode autograd, one output at a time."""
    flat = p.params0.requires_grad_(True)
    z = p.fmodel(flat, x)
    rows = []
    for n in range(z.shape[0]):
        for c in range(z.shape[1]):
            (g,) = torch.autograd.grad(z[n, c], flat, retain_graph=True)
            rows.append(g)
    return torch.stack(rows).reshape(z.shape[0], z.shape[1], -1)


def dense_q(likelihood: str, z: torch.Tensor) -> torch.Tensor:
    if likelihood == "softmax_ce":
        p = torch.softmax(z, -1)
        return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    return torch.eye(z.shape[-1], dtype=z.dtype).expand(z.shape[0], -1, -1)


def test_module_matches_functional_model_and_canonical_order(tiny_suite: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    module = p.model
    names = [n for n, q in module.named_parameters() if q.requires_grad]
    assert names == [blk.name for blk in p.layout.blocks]
    flat = torch.nn.utils.parameters_to_vector([q for q in module.parameters() if q.requires_grad])
    torch.testing.assert_close(flat, p.params0, rtol=0, atol=0)
    torch.testing.assert_close(module(b.x), p.fmodel(p.params0, b.x), rtol=RTOL, atol=1e-12)


def test_initial_params_are_deterministic_numpy_draws(tiny_suite: str) -> None:
    spec = get_suite(tiny_suite).model
    a, b = spec.init_flat(7), spec.init_flat(7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, spec.init_flat(8))
    p = build_problem(get_suite(tiny_suite), seed=7, dtype="float64")
    np.testing.assert_array_equal(p.to_numpy(p.params0), a)


def test_loss_and_gradient_match_module_autograd(tiny_suite: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    module = p.model
    z = module(b.x)
    loss = likelihoods.per_sample_loss(p.likelihood, z, b.y).mean()
    grads = torch.autograd.grad(loss, [q for q in module.parameters() if q.requires_grad])
    o = p.oracle(p.params0, b)
    torch.testing.assert_close(o.loss(), loss.detach(), rtol=RTOL, atol=0)
    torch.testing.assert_close(o.grad(), torch.cat([g.reshape(-1) for g in grads]), rtol=RTOL, atol=1e-13)


def test_per_sample_gradients_match_a_loop(tiny_suite: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    o = p.oracle(p.params0, b)
    J = o.per_sample_grads()
    flat = p.params0.requires_grad_(True)
    for n in range(b.x.shape[0]):
        ln = likelihoods.per_sample_loss(p.likelihood, p.fmodel(flat, b.x[n : n + 1]), b.y[n : n + 1]).sum()
        (gn,) = torch.autograd.grad(ln, flat)
        torch.testing.assert_close(J[n], gn, rtol=RTOL, atol=1e-13)
    torch.testing.assert_close(J.mean(0), o.grad(), rtol=RTOL, atol=1e-13)


def test_logit_gradients_match_autograd(tiny_suite: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    o = p.oracle(p.params0, b)
    z = o.logits.clone().requires_grad_(True)
    (r,) = torch.autograd.grad(likelihoods.per_sample_loss(p.likelihood, z, b.y).sum(), z)
    torch.testing.assert_close(o.logit_grads(), r, rtol=RTOL, atol=1e-14)


def test_jvp_vjp_and_ggn_match_dense_references(tiny_suite: str, rng: np.random.Generator) -> None:
    p, b = problem_and_batch(tiny_suite)
    o = p.oracle(p.params0, b)
    Jz = dense_output_jacobian(p, b.x)
    B, C, P = Jz.shape
    v = torch.as_tensor(rng.normal(size=P))
    u = torch.as_tensor(rng.normal(size=(B, C)))
    torch.testing.assert_close(o.jvp(v), Jz @ v, rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(o.vjp(u), torch.einsum("bcp,bc->p", Jz, u), rtol=RTOL, atol=1e-12)
    Q = dense_q(p.likelihood, o.logits)
    G = torch.einsum("bcp,bcd,bdq->pq", Jz, Q, Jz) / B
    torch.testing.assert_close(o.ggn_vp(v), G @ v, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(o.ggn_quad(v), v @ G @ v, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(o.output_jacobian(), Jz, rtol=RTOL, atol=1e-12)
    # Every per-sample gradient row is Jz_n^T r_n.
    torch.testing.assert_close(
        o.per_sample_grads(), torch.einsum("bcp,bc->bp", Jz, o.logit_grads()), rtol=1e-9, atol=1e-12
    )


def test_taps_reconstruct_per_sample_gradients(tiny_suite: str) -> None:
    """For Linear layers, grad_W l_n = e_n a_n^T and grad_b l_n = e_n."""
    p, b = problem_and_batch(tiny_suite)
    o = p.oracle(p.params0, b, taps=True)
    J = o.per_sample_grads()
    for layer, a, e in zip(p.layout.tapped, o.tap_inputs(), o.tap_grads(), strict=True):
        w = J[:, layer.weight.offset : layer.weight.stop].reshape(-1, *layer.weight.shape)
        torch.testing.assert_close(w, torch.einsum("bo,bi->boi", e, a), rtol=1e-9, atol=1e-13)
        assert layer.bias is not None
        torch.testing.assert_close(J[:, layer.bias.offset : layer.bias.stop], e, rtol=1e-9, atol=1e-13)
    # Weighted gradient: one reverse pass gives J^T w.
    w_n = torch.linspace(-1.0, 2.0, b.x.shape[0], dtype=torch.float64)
    torch.testing.assert_close(o.weighted_grad(w_n), J.T @ w_n, rtol=1e-9, atol=1e-12)


def test_carried_tangent_is_the_jvp_and_leaves_the_graph_forward_unchanged(
    tiny_suite: str, rng: np.random.Generator
) -> None:
    """``carry_tangent(v)`` before the forward: ``jvp(v)`` is the separate pass's tangent bit
    for bit, booked as one ``jvp`` when handed out, and the loss, gradient and taps are the
    plain forward's; after the forward it is a no-op (``jvp`` takes its own pass)."""
    p, b = problem_and_batch(tiny_suite)
    v = torch.as_tensor(rng.normal(size=p.num_params))
    plain = p.oracle(p.params0, b, taps=True)
    want_loss, want_grad = plain.loss_and_grad()
    want_u, want_a, want_e = plain.jvp(v), plain.tap_inputs(), plain.tap_grads()
    carried = p.oracle(p.params0, b, taps=True)
    carried.carry_tangent(v)
    before = p.counters.snapshot()
    loss, grad = carried.loss_and_grad()
    assert p.counters.snapshot()["jvp"] == before["jvp"]  # booked when handed out
    assert torch.equal(carried.jvp(v), want_u)
    assert torch.equal(loss, want_loss) and torch.equal(grad, want_grad)
    assert all(torch.equal(x, y) for x, y in zip(carried.tap_inputs(), want_a, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(carried.tap_grads(), want_e, strict=True))
    delta = {k: p.counters.snapshot()[k] - before[k] for k in before}
    assert delta == {"forward": 1, "backward": 1, "jvp": 1, "vjp": 0, "per_sample": 0}
    late = p.oracle(p.params0, b)
    late.loss_value()
    late.loss_and_grad()
    late.carry_tangent(v)  # the forward has run: nothing to carry
    assert torch.equal(late.jvp(v), want_u) and late._carried is None


def test_one_draw_sampled_logit_grad_is_the_k_draw_form_bit_for_bit(tiny_suite: str) -> None:
    """``sampled_logit_grad()`` (K-FAC's statistics) equals ``sampled_logit_grads(1)[0]`` bit for
    bit on both likelihoods, also for noise at the ends of ``[0, 1)`` (first and last label)."""
    p, b = problem_and_batch(tiny_suite)
    o = p.oracle(p.params0, b)
    assert torch.equal(o.sampled_logit_grad(), o.sampled_logit_grads(1)[0])
    z = o.logits
    for likelihood in ("softmax_ce", "mse"):
        for u in (0.0, 1.0 - 1e-12, 0.37):
            noise = torch.rand(2, *z.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
            noise[0, ::2, 0] = u
            want = likelihoods.logit_grads(likelihood, z, likelihoods.sample_targets(likelihood, z, noise[:1]))[0]
            assert torch.equal(likelihoods.sampled_logit_grad(likelihood, z, noise[0]), want)


def test_pass_counters_count_each_primitive(tiny_suite: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    before = p.counters.snapshot()
    o = p.oracle(p.params0, b)
    o.loss_and_grad()
    o.grad()  # cached: no second pass
    o.ggn_quad(p.params0)
    o.ggn_vp(p.params0)
    after = p.counters.snapshot()
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {"forward": 1, "backward": 1, "jvp": 2, "vjp": 1, "per_sample": 0}


def test_sampled_labels_follow_the_model_distribution() -> None:
    """Chi-square goodness of fit of labels drawn from the batch noise (fixed seed)."""
    torch.manual_seed(0)
    z = torch.tensor([[1.5, -0.5, 0.2, 0.0]], dtype=torch.float64)
    p = torch.softmax(z, -1)[0].numpy()
    noise = torch.as_tensor(np.random.default_rng(5).random((20000, 1, 4)))
    labels = likelihoods.sample_targets("softmax_ce", z, noise)[:, 0].numpy()
    counts = np.bincount(labels, minlength=4)
    chi2 = stats.chisquare(counts, p * counts.sum())
    assert chi2.pvalue > 0.01
    # And a wrong distribution is rejected by the same test.
    assert stats.chisquare(counts, np.full(4, counts.sum() / 4)).pvalue < 1e-6


def test_sampled_gaussian_targets_have_unit_variance_around_the_output() -> None:
    z = torch.tensor([[0.3, -1.0]], dtype=torch.float64)
    noise = torch.as_tensor(np.random.default_rng(6).random((20000, 1, 2)))
    t = likelihoods.sample_targets("mse", z, noise)[:, 0]
    np.testing.assert_allclose(t.mean(0).numpy(), z[0].numpy(), atol=0.03)
    np.testing.assert_allclose(t.std(0).numpy(), [1.0, 1.0], atol=0.03)


def test_batches_are_deterministic_and_cover_an_epoch() -> None:
    p = build_problem(get_suite("tiny-ce"), seed=11, dtype="float64")
    per_epoch = p.n_train // p.batch_size
    seen = np.concatenate([p.batch(s)[2] for s in range(per_epoch)])
    assert len(set(seen.tolist())) == per_epoch * p.batch_size
    x, _y, idx = p.batch(3)
    np.testing.assert_array_equal(idx, build_problem(get_suite("tiny-ce"), seed=11).batch(3)[2])
    np.testing.assert_array_equal(x, get_suite("tiny-ce").data.x_train[idx])


@pytest.mark.parametrize("likelihood", ["softmax_ce", "mse"])
def test_output_hessian_apply_matches_dense(likelihood: str, rng: np.random.Generator) -> None:
    z = torch.as_tensor(rng.normal(size=(5, 4)))
    u = torch.as_tensor(rng.normal(size=(5, 4)))
    Q = dense_q(likelihood, z)
    torch.testing.assert_close(likelihoods.output_hessian_apply(likelihood, z, u), torch.einsum("bij,bj->bi", Q, u))
    torch.testing.assert_close(likelihoods.output_quadratic(likelihood, z, u), torch.einsum("bi,bij,bj->b", u, Q, u))


def test_accuracy_is_the_exact_fraction_in_float32_and_equals_jax() -> None:
    """784 hits of 1000 is 0.784 exactly (a float32 mean gives 0.78399998 and misses a frozen
    target of 0.784); both backends divide the count the same way."""
    from backends.jax import likelihoods as jax_likelihoods

    z = torch.zeros(1000, 2, dtype=torch.float32)
    z[:784, 1] = 1.0
    y = torch.ones(1000, dtype=torch.int64)
    assert likelihoods.metrics("softmax_ce", z, y)["accuracy"] == 0.784
    sums = jax_likelihoods.metric_sums("softmax_ce", z.numpy(), y.numpy())
    jax_metrics = jax_likelihoods.finish_metrics("softmax_ce", {k: float(v) for k, v in sums.items()}, 1000, 2)
    assert jax_metrics["accuracy"] == 0.784


def test_reverse_pass_is_torch_autograd_grad_bit_for_bit_and_refuses_a_misshapen_cotangent(
    rng: np.random.Generator,
) -> None:
    """The oracle's reverse pass calls the autograd engine directly (docs/profiling.md, "A torch
    step's fixed cost"): the same numbers as ``torch.autograd.grad``, and a cotangent of the wrong
    shape is an error, as there, not summed into shape by the engine."""
    p = build_problem(get_suite("digits-mlp"), seed=0, dtype="float32")
    b = p.device_batch(0)
    oracle = p.oracle(p.params0, b, taps=True)
    u = torch.as_tensor(rng.standard_normal(tuple(oracle.logits.shape)), dtype=torch.float32)
    rev = oracle.reverse(u)
    leaf = p.params0.requires_grad_(True)
    taps = models.Taps()
    z = p.fmodel(leaf, b.x, taps)
    expected = torch.autograd.grad(z, [leaf, *taps.outputs], grad_outputs=u)
    assert torch.equal(rev.param_grad, expected[0])
    assert all(torch.equal(e, x) for e, x in zip(rev.tap_grads, expected[1:], strict=True))
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        oracle.reverse(u.expand(2, *u.shape))
