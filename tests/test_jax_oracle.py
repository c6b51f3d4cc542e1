"""The JAX model, oracle and counted jit against dense references (float64, tiny suites)."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.datasets import load_digits

from backends.jax import build_problem, likelihoods
from backends.jax.counting import Counters
from backends.jax.optimizers import builtin_adapters
from backends.spec import Adapter, Batch, hparam
from suites import get_suite
from suites.layers import GELU, Conv2d, Flatten, Linear, ModelSpec, ReLU, Reshape
from suites.layers import Activation as Act
from suites.spec import Budget, Dataset, Suite

RTOL = 1e-10


def conv_suite() -> Suite:
    """Every layer kind of the vocabulary on real 8x8 digits (not registered; for tests)."""

    def load() -> Dataset:
        x, y = load_digits(return_X_y=True)
        x = x / 16.0
        return Dataset(x[:160], y[:160].astype(np.int64), x[160:200], y[160:200].astype(np.int64))

    model = ModelSpec(
        (64,),
        (
            Reshape((1, 8, 8)),
            Conv2d(1, 4, 3, stride=1, padding=1),
            GELU(),
            Conv2d(4, 6, 3, stride=2, padding=0),
            ReLU(),
            Flatten(),
            Linear(54, 10),
            Act("sigmoid"),
            Linear(10, 10),
        ),
    )
    return Suite(
        name="test-conv",
        version=1,
        description="conv test model",
        paper="test",
        model=model,
        likelihood="softmax_ce",
        batch_size=8,
        budget=Budget(steps=10),
        eval_every=5,
        load=load,
        size="test",
    )


def problem_and_batch(name: str, step: int = 0):  # type: ignore[no-untyped-def]
    suite = conv_suite() if name == "test-conv" else get_suite(name)
    p = build_problem(suite, seed=3, dtype="float64")
    return p, p.device_batch(step)


def dense_output_jacobian(p, x: jax.Array) -> jax.Array:  # type: ignore[no-untyped-def]
    """``(B, C, P)`` by reverse-mode autodiff of the whole batch output."""
    return jax.jacrev(lambda flat: p.model.apply(flat, x))(p.params0)


def dense_q(likelihood: str, z: jax.Array) -> jax.Array:
    if likelihood == "softmax_ce":
        pr = jax.nn.softmax(z, -1)
        return jax.vmap(jnp.diag)(pr) - pr[:, :, None] * pr[:, None, :]
    return jnp.broadcast_to(jnp.eye(z.shape[-1]), (z.shape[0], z.shape[-1], z.shape[-1]))


def close(actual: Any, desired: Any, rtol: float = RTOL, atol: float = 1e-12) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol)


@pytest.fixture(params=["tiny-ce", "tiny-mse", "test-conv"])
def any_suite(request: pytest.FixtureRequest) -> str:
    return request.param


# --------------------------------------------------------------------------- model


def test_initial_params_are_the_numpy_draws_in_canonical_order(tiny_suite: str) -> None:
    spec = get_suite(tiny_suite).model
    p = build_problem(get_suite(tiny_suite), seed=7, dtype="float64")
    np.testing.assert_array_equal(p.to_numpy(p.params0), spec.init_flat(7))
    assert p.params0.dtype == jnp.float64 and p.num_params == spec.num_params()
    arrays = spec.init_params(7)
    for block, (_, pspec), value in zip(p.layout.blocks, spec.param_specs(), arrays, strict=True):
        layer = p.model.layer_params(p.params0)[block.layer_index][block.role]
        assert layer.shape == pspec.shape
        np.testing.assert_array_equal(np.asarray(layer), value)
    p32 = build_problem(get_suite(tiny_suite), seed=7, dtype="float32")
    assert p32.params0.dtype == jnp.float32
    np.testing.assert_array_equal(p32.to_numpy(p32.params0), spec.init_flat(7).astype(np.float32))


def test_conv_model_matches_a_numpy_reference() -> None:
    """NCHW convolution with stride/padding, GELU (tanh), ReLU, sigmoid, flatten, reshape."""
    p, b = problem_and_batch("test-conv")
    x = np.asarray(b.x).reshape(-1, 1, 8, 8)
    params = [np.asarray(a) for a in p.suite.model.init_params(3)]

    def conv(h: np.ndarray, w: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> np.ndarray:
        h = np.pad(h, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        k = w.shape[-1]
        out_hw = (h.shape[-1] - k) // stride + 1
        out = np.zeros((h.shape[0], w.shape[0], out_hw, out_hw))
        for i in range(out_hw):
            for j in range(out_hw):
                patch = h[:, :, i * stride : i * stride + k, j * stride : j * stride + k]
                out[:, :, i, j] = np.einsum("bikl,oikl->bo", patch, w) + bias
        return out

    def gelu_tanh(v: np.ndarray) -> np.ndarray:
        return 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v**3)))

    h = gelu_tanh(conv(x, params[0], params[1], 1, 1))
    h = np.maximum(conv(h, params[2], params[3], 2, 0), 0.0).reshape(x.shape[0], -1)
    h = 1.0 / (1.0 + np.exp(-(h @ params[4].T + params[5])))
    z = h @ params[6].T + params[7]
    close(p.model.apply(p.params0, b.x), z, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- oracle vs dense


def test_loss_and_gradient_match_autodiff(any_suite: str) -> None:
    p, b = problem_and_batch(any_suite)

    @jax.jit
    def loss(flat: jax.Array) -> jax.Array:
        return likelihoods.per_sample_loss(p.likelihood, p.model.apply(flat, b.x), b.y).mean()

    oracle_loss, oracle_grad = p.jit(lambda params, batch: p.oracle(params, batch).loss_and_grad())(p.params0, b)
    close(oracle_loss, loss(p.params0), atol=0)
    close(oracle_grad, jax.jit(jax.grad(loss))(p.params0), atol=1e-13)


def test_per_sample_gradients_match_a_loop(tiny_suite: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    J, g = p.jit(lambda params, batch: (p.oracle(params, batch).per_sample_grads(), p.oracle(params, batch).grad()))(
        p.params0, b
    )

    @jax.jit
    @jax.grad
    def grad_n(flat: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        return likelihoods.per_sample_loss(p.likelihood, p.model.apply(flat, x[None]), y[None]).sum()

    for n in range(b.x.shape[0]):
        close(J[n], grad_n(p.params0, b.x[n], b.y[n]), atol=1e-13)
    close(J.mean(0), g, atol=1e-13)


def test_logit_gradients_match_autodiff(tiny_suite: str) -> None:
    p, b = problem_and_batch(tiny_suite)
    z, r = p.jit(lambda params, batch: (p.oracle(params, batch).logits, p.oracle(params, batch).logit_grads()))(
        p.params0, b
    )
    close(r, jax.jit(jax.grad(lambda z: likelihoods.per_sample_loss(p.likelihood, z, b.y).sum()))(z), atol=1e-14)


def test_jvp_vjp_and_ggn_match_dense_references(any_suite: str, rng: np.random.Generator) -> None:
    p, b = problem_and_batch(any_suite)
    Jz = jax.jit(lambda flat: dense_output_jacobian(p, b.x))(p.params0)
    B, C, P = Jz.shape
    v = jnp.asarray(rng.normal(size=P))
    u = jnp.asarray(rng.normal(size=(B, C)))

    def primitives(params: jax.Array, batch: Batch[jax.Array]) -> dict[str, jax.Array]:
        o = p.oracle(params, batch)
        return {
            "jvp": o.jvp(v),
            "vjp": o.vjp(u),
            "ggn_vp": o.ggn_vp(v),
            "ggn_quad": o.ggn_quad(v),
            "jac": o.output_jacobian(),
            "psg": o.per_sample_grads(),
            "z": o.logits,
            "r": o.logit_grads(),
        }

    o = p.jit(primitives)(p.params0, b)
    close(o["jvp"], Jz @ v)
    close(o["vjp"], jnp.einsum("bcp,bc->p", Jz, u))
    Q = dense_q(p.likelihood, o["z"])
    G = jnp.einsum("bcp,bcd,bdq->pq", Jz, Q, Jz) / B
    close(o["ggn_vp"], G @ v, rtol=1e-9)
    close(o["ggn_quad"], v @ G @ v, rtol=1e-9)
    close(o["jac"], Jz)
    close(o["psg"], jnp.einsum("bcp,bc->bp", Jz, o["r"]), rtol=1e-9)


def _tap_outputs(p, b, weights: jax.Array) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    def taps(params: jax.Array, batch: Batch[jax.Array]) -> dict[str, Any]:
        o = p.oracle(params, batch, taps=True)
        return {
            "J": o.per_sample_grads(),
            "a": o.tap_inputs(),
            "e": o.tap_grads(),
            "e_r": o.tap_grads_for(o.logit_grads()),
            "Jw": o.weighted_grad(weights),
        }

    return p.jit(taps)(p.params0, b)  # type: ignore[no-any-return]


def test_taps_reconstruct_per_sample_gradients(tiny_suite: str) -> None:
    """For Linear layers, grad_W l_n = e_n a_n^T and grad_b l_n = e_n."""
    p, b = problem_and_batch(tiny_suite)
    w_n = jnp.linspace(-1.0, 2.0, b.x.shape[0])
    o = _tap_outputs(p, b, w_n)
    J = o["J"]
    close(o["a"][0], b.x, rtol=0, atol=0)
    for layer, a, e in zip(p.layout.tapped, o["a"], o["e"], strict=True):
        w = J[:, layer.weight.offset : layer.weight.stop].reshape(-1, *layer.weight.shape)
        close(w, jnp.einsum("bo,bi->boi", e, a), rtol=1e-9, atol=1e-13)
        assert layer.bias is not None
        close(J[:, layer.bias.offset : layer.bias.stop], e, rtol=1e-9, atol=1e-13)
    # Any logit cotangent: the taps are its pre-activation cotangents.
    for e_r, e in zip(o["e_r"], o["e"], strict=True):
        close(e_r, e, rtol=0, atol=0)
    close(o["Jw"], J.T @ w_n, rtol=1e-9)


def test_conv_taps_give_the_per_sample_convolution_gradients() -> None:
    """A conv layer's per-sample weight gradient is the weight-VJP of its input tap with cotangent e."""
    p, b = problem_and_batch("test-conv")
    o = _tap_outputs(p, b, jnp.ones(b.x.shape[0]))
    J = o["J"]
    for tapped, a, e in zip(p.layout.tapped, o["a"], o["e"], strict=True):
        blocks = p.model.layer_params(p.params0)[tapped.layer_index]
        layer, forward = tapped.layer, p.model._impls[tapped.layer_index]

        @jax.jit
        def weight_grads(
            a: jax.Array, e: jax.Array, layer: Any = layer, forward: Any = forward, blocks: Any = blocks
        ) -> jax.Array:
            def one(a_n: jax.Array, e_n: jax.Array) -> jax.Array:
                _, pull = jax.vjp(lambda w: forward(layer, {**blocks, "weight": w}, a_n[None]), blocks["weight"])
                return pull(e_n[None])[0]

            return jax.vmap(one)(a, e)

        gw = weight_grads(a, e)
        close(J[:, tapped.weight.offset : tapped.weight.stop], gw.reshape(gw.shape[0], -1), rtol=1e-9, atol=1e-13)
        assert tapped.bias is not None
        bias_grad = e.sum(axis=tuple(range(2, e.ndim)))
        close(J[:, tapped.bias.offset : tapped.bias.stop], bias_grad, rtol=1e-9, atol=1e-13)


# --------------------------------------------------------------------------- pass counting


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def test_eager_oracle_equals_the_jitted_one_and_counts_each_primitive(rng: np.random.Generator) -> None:
    """``harness.api.direction`` runs adapters eagerly: same numbers, passes counted directly."""
    p, b = problem_and_batch("tiny-ce")
    v = jnp.asarray(rng.normal(size=p.num_params))

    def primitives(params: jax.Array, batch: Batch[jax.Array], v: jax.Array) -> tuple[jax.Array, ...]:
        o = p.oracle(params, batch, taps=True)
        loss, g = o.loss_and_grad()
        o.grad()  # cached: no second pass
        return (loss, g, o.ggn_quad(v), o.ggn_vp(v), *o.tap_grads(), o.sampled_logit_grads(2))

    before = p.counters.snapshot()
    eager = primitives(p.params0, b, v)
    assert _delta(before, p.counters.snapshot()) == {"forward": 1, "backward": 1, "jvp": 2, "vjp": 1, "per_sample": 0}
    jitted = p.jit(primitives)(p.params0, b, v)
    for x, y in zip(eager, jitted, strict=True):
        close(x, y, rtol=1e-12, atol=1e-14)


def test_jitted_functions_book_their_passes_on_every_call() -> None:
    p, _ = problem_and_batch("tiny-ce")

    def work(params: jax.Array, batch: Batch[jax.Array]) -> jax.Array:
        o = p.oracle(params, batch, taps=True)
        g = o.grad()
        o.tap_grads_for(o.sampled_logit_grads(1)[0])
        return o.ggn_vp(g)

    fn = p.jit(work)
    for call in range(3):
        before = p.counters.snapshot()
        fn(p.params0, p.device_batch(call))
        assert _delta(before, p.counters.snapshot()) == {
            "forward": 1,
            "backward": 2,
            "jvp": 1,
            "vjp": 1,
            "per_sample": 0,
        }
    assert fn.traces == 1 and fn.compile_count == 1


def test_each_compiled_variant_replays_its_own_counts() -> None:
    """Static arguments and shapes select the trace record; nested counted functions add up."""
    p, b = problem_and_batch("tiny-ce")

    def work(params: jax.Array, batch: Batch[jax.Array], mode: str) -> jax.Array:
        o = p.oracle(params, batch)
        g = o.grad()
        return o.ggn_vp(g) if mode == "ggn" else g

    fn = p.jit(work)
    half = b._replace(x=b.x[:8], y=b.y[:8], index=b.index[:8], noise=b.noise[:, :8])
    expected = {
        "grad": {"forward": 1, "backward": 1, "jvp": 0, "vjp": 0, "per_sample": 0},
        "ggn": {"forward": 1, "backward": 1, "jvp": 1, "vjp": 1, "per_sample": 0},
    }
    for batch, mode in [(b, "grad"), (b, "ggn"), (half, "grad"), (b, "grad"), (b, "ggn"), (half, "grad")]:
        before = p.counters.snapshot()
        fn(p.params0, batch, mode)
        assert _delta(before, p.counters.snapshot()) == expected[mode]
    assert fn.traces == 3 and fn.compile_count == 3

    outer = p.jit(lambda params, batch: fn(params, batch, "ggn") + fn(params, batch, "grad"))
    for _ in range(2):
        before = p.counters.snapshot()
        outer(p.params0, b)
        assert _delta(before, p.counters.snapshot()) == {
            "forward": 2,
            "backward": 2,
            "jvp": 1,
            "vjp": 1,
            "per_sample": 0,
        }


def test_data_dependent_loops_book_their_passes_with_capture() -> None:
    """A backtracking loop whose trip count depends on the data books body passes x trips."""
    p, b = problem_and_batch("tiny-mse")

    def search(params: jax.Array, batch: Batch[jax.Array], limit: jax.Array) -> jax.Array:
        g = p.oracle(params, batch).grad()

        def body(carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            i, t = carry
            p.oracle(params - t * g, batch).loss()  # one forward per trial
            return i + 1, t * 0.5

        with p.counters.capture() as per_trial:
            trials, _ = jax.lax.while_loop(lambda c: c[0] < limit, body, (jnp.asarray(0), jnp.asarray(1.0)))
        p.counters.add_scaled(per_trial, trials)
        return trials

    fn = p.jit(search)
    for limit in (3, 5, 0):
        before = p.counters.snapshot()
        fn(p.params0, b, jnp.asarray(limit))
        assert _delta(before, p.counters.snapshot()) == {
            "forward": 1 + limit,
            "backward": 1,
            "jvp": 0,
            "vjp": 0,
            "per_sample": 0,
        }
    assert fn.compile_count == 1


def test_conditional_passes_are_booked_only_when_their_branch_runs() -> None:
    """``lax.cond`` traces both branches: capture each and book it by the predicate."""
    p, b = problem_and_batch("tiny-ce")

    def refresh_every_3(params: jax.Array, batch: Batch[jax.Array], step: jax.Array) -> jax.Array:
        o = p.oracle(params, batch)
        g = o.grad()
        captured: dict[str, dict[str, int]] = {}

        def refresh(g: jax.Array) -> jax.Array:
            with p.counters.capture() as captured["refresh"]:
                return p.oracle(params, batch).ggn_vp(g)  # a fresh forward, a JVP and a VJP

        def keep(g: jax.Array) -> jax.Array:
            with p.counters.capture() as captured["keep"]:
                return g

        taken = step % 3 == 0
        out = jax.lax.cond(taken, refresh, keep, g)
        p.counters.add_scaled(captured["refresh"], taken.astype(jnp.int64))
        p.counters.add_scaled(captured["keep"], 1 - taken.astype(jnp.int64))
        return out

    fn = p.jit(refresh_every_3)
    for step in range(4):
        before = p.counters.snapshot()
        fn(p.params0, b, jnp.asarray(step))
        refreshed = int(step % 3 == 0)
        assert _delta(before, p.counters.snapshot()) == {
            "forward": 1 + refreshed,
            "backward": 1,
            "jvp": refreshed,
            "vjp": refreshed,
            "per_sample": 0,
        }


def test_traced_counts_need_a_counted_function_and_kinds_are_checked() -> None:
    counters = Counters()
    counters.add("jvp", jnp.asarray(2))  # a concrete array outside any trace is just a number
    assert counters.snapshot()["jvp"] == 2
    with pytest.raises(RuntimeError, match="inside a function prepared"):
        jax.jit(lambda n: counters.add("forward", n))(jnp.asarray(1))
    with pytest.raises(KeyError, match="unknown pass kind"):
        Counters().add("hessian")


# --------------------------------------------------------------------------- the jitted step


@dataclasses.dataclass(frozen=True)
class ToyHyperparams:
    lr: float = hparam(0.1, doc="learning rate", low=0.0)
    normalize: bool = hparam(True, doc="divide the gradient by its norm")
    schedule: str = hparam("constant", doc="a string hyperparameter", choices=("constant", "inverse"))


class ToyState(NamedTuple):
    hparams: ToyHyperparams
    count: Any  # a Python int at init, as third-party adapters may write it


class ToyAdapter(Adapter):
    """A third-party-style adapter: its own hyperparameter class, no JAX registration."""

    name = "toy"
    backend = "jax"
    Hyperparams = ToyHyperparams

    def init(self, problem: Any, hparams: ToyHyperparams) -> ToyState:
        return ToyState(hparams, 0)

    def direction(self, problem: Any, params: jax.Array, state: ToyState, batch: Batch[jax.Array]) -> jax.Array:
        g = problem.oracle(params, batch).grad()
        return g / jnp.linalg.norm(g) if state.hparams.normalize else g

    def step(self, problem: Any, params: jax.Array, state: ToyState, batch: Batch[jax.Array]) -> Any:
        hp = state.hparams
        lr = hp.lr if hp.schedule == "constant" else hp.lr / (1.0 + state.count)
        loss = problem.oracle(params, batch).loss()
        new = params - lr * self.direction(problem, params, state, batch)
        return new, ToyState(hp, state.count + 1), {"loss": loss, "lr": lr, "schedule": hp.schedule}


def test_static_hyperparameters_work_for_any_adapter() -> None:
    p, _ = problem_and_batch("tiny-ce")
    adapter = ToyAdapter()
    for hp in (ToyHyperparams(), ToyHyperparams(normalize=False, schedule="inverse")):
        step = p.make_step(adapter)
        params, state = p.params0, adapter.init(p, hp)
        eager_params, eager_state = params, state
        for i in range(4):
            batch = p.device_batch(i)
            params, state, stats = step(params, state, batch)
            eager_params, eager_state, _ = adapter.step(p, eager_params, eager_state, batch)
            assert state.hparams is hp and stats["schedule"] == hp.schedule
            close(params, eager_params, rtol=1e-12, atol=1e-15)
        assert int(state.count) == 4 and step.traces == 1
        assert step.compile_count == 1  # the Python int at init traces like the arrays after it


def test_unhashable_static_values_get_a_clear_error() -> None:
    p, _ = problem_and_batch("tiny-ce")
    fn = p.jit(lambda params, table: params)
    with pytest.raises(TypeError, match=r"must be hashable.*dict_keys"):
        fn(p.params0, [{"a": 1}.keys()])


@pytest.mark.parametrize("name", sorted(builtin_adapters()))
def test_every_jax_adapter_keeps_float32_runs_in_float32(name: str) -> None:
    """With x64 enabled a bare jnp.zeros(n) is float64: catch adapters that create such arrays."""
    p = build_problem(get_suite("tiny-ce"), seed=0, dtype="float32")
    cls = builtin_adapters()[name]
    adapter = cls()
    state = adapter.init(p, cls.resolve())
    step = p.make_step(adapter)
    params = p.params0
    for i in range(2):
        params, state, stats = step(params, state, p.device_batch(i))
    floats = [x for x in jax.tree_util.tree_leaves((params, state, stats)) if isinstance(x, jax.Array)]
    floats = [x for x in floats if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats), [x.dtype for x in floats]
    assert p.make_direction(adapter)(params, state, p.device_batch(2)).dtype == jnp.float32


# --------------------------------------------------------------------------- labels, likelihoods


def test_sampled_labels_follow_the_model_distribution() -> None:
    """Chi-square goodness of fit of labels drawn from uniform noise (fixed seed)."""
    z = jnp.asarray([[1.5, -0.5, 0.2, 0.0]])
    pr = np.asarray(jax.nn.softmax(z, -1)[0])
    noise = jnp.asarray(np.random.default_rng(5).random((20000, 1, 4)))
    labels = np.asarray(likelihoods.sample_targets("softmax_ce", z, noise)[:, 0])
    assert labels.dtype == np.int64
    counts = np.bincount(labels, minlength=4)
    assert stats.chisquare(counts, pr * counts.sum()).pvalue > 0.01
    # And a wrong distribution is rejected by the same test.
    assert stats.chisquare(counts, np.full(4, counts.sum() / 4)).pvalue < 1e-6


def test_sampled_gaussian_targets_have_unit_variance_around_the_output() -> None:
    z = jnp.asarray([[0.3, -1.0]])
    noise = jnp.asarray(np.random.default_rng(6).random((20000, 1, 2)))
    t = np.asarray(likelihoods.sample_targets("mse", z, noise)[:, 0])
    np.testing.assert_allclose(t.mean(0), np.asarray(z[0]), atol=0.03)
    np.testing.assert_allclose(t.std(0), [1.0, 1.0], atol=0.03)


def test_oracle_samples_from_the_batch_noise(tiny_suite: str) -> None:
    p, b = problem_and_batch(tiny_suite, step=2)

    def sampled(params: jax.Array, batch: Batch[jax.Array]) -> dict[str, jax.Array]:
        o = p.oracle(params, batch)
        targets = o.sample_targets(4)
        return {
            "targets": targets,
            "expected": likelihoods.sample_targets(p.likelihood, o.logits, batch.noise),
            "r": o.sampled_logit_grads(4),
            "r_expected": jnp.stack([likelihoods.logit_grads(p.likelihood, o.logits, t) for t in targets]),
        }

    out = p.jit(sampled)(p.params0, b)
    close(out["targets"], out["expected"], rtol=0, atol=0)
    close(out["r"], out["r_expected"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="at most 4 sampled targets"):
        p.oracle(p.params0, b).sample_targets(5)


@pytest.mark.parametrize("likelihood", ["softmax_ce", "mse"])
def test_output_hessian_apply_matches_dense(likelihood: str, rng: np.random.Generator) -> None:
    z = jnp.asarray(rng.normal(size=(5, 4)))
    u = jnp.asarray(rng.normal(size=(5, 4)))
    Q = dense_q(likelihood, z)
    close(likelihoods.output_hessian_apply(likelihood, z, u), jnp.einsum("bij,bj->bi", Q, u), atol=1e-14)
    close(likelihoods.output_quadratic(likelihood, z, u), jnp.einsum("bi,bij,bj->b", u, Q, u), atol=1e-14)


# --------------------------------------------------------------------------- problem


def test_batches_match_the_numpy_batches_and_noise() -> None:
    from suites.spec import batch_noise

    p = build_problem(get_suite("tiny-ce"), seed=11, dtype="float32")
    x, y, idx = p.batch(3)
    b = p.device_batch(3)
    np.testing.assert_array_equal(np.asarray(b.index), idx)
    np.testing.assert_array_equal(np.asarray(b.x), x.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(b.y), y)
    np.testing.assert_array_equal(np.asarray(b.noise), batch_noise(11, 3, p.batch_size, p.num_outputs))
    assert b.x.dtype == jnp.float32 and b.y.dtype == jnp.int64


def test_evaluate_reports_the_metrics_of_the_model(tiny_suite: str) -> None:
    p = build_problem(get_suite(tiny_suite), seed=0, dtype="float64")
    data = p.suite.data
    ev = p.evaluate(p.params0)
    z = np.asarray(jax.jit(p.model.apply)(p.params0, jnp.asarray(data.x_val)))
    y = data.y_val
    if p.likelihood == "softmax_ce":
        val_loss = np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(len(y)), y])
    else:
        val_loss = np.mean(0.5 * ((z - y) ** 2).sum(-1))
    close(ev["val_loss"], val_loss, rtol=1e-12)
    if p.likelihood == "softmax_ce":
        assert set(ev) == {"val_loss", "val_accuracy", "train_loss", "train_accuracy"}
        close(ev["val_accuracy"], np.mean(np.argmax(z, -1) == y))
    else:
        assert set(ev) == {"val_loss", "val_rmse", "train_loss", "train_rmse"}
        close(ev["val_rmse"], np.sqrt(np.mean((z - y) ** 2)))
    assert all(isinstance(v, float) for v in ev.values())


def test_bad_devices_and_dtypes_are_rejected() -> None:
    suite = get_suite("tiny-ce")
    with pytest.raises(ValueError, match="unknown dtype"):
        build_problem(suite, dtype="float16")
    with pytest.raises(ValueError, match="unknown device"):
        build_problem(suite, device="tpu")
    with pytest.raises(ValueError, match="JAX sees no GPU"):
        build_problem(suite, device="cuda")


def test_peak_memory_is_labelled_by_what_it_measures() -> None:
    p = build_problem(get_suite("tiny-ce"))
    value, kind = p.peak_memory()
    assert kind == "cpu_process_peak_rss" and value is not None and value > 10 * 2**20
