"""Every layer kind's blocks (backends.layer_kinds) against the exact dense blocks from autodiff.

kfac-jax's ``to_dense_matrix`` discipline: each registered kind's contribution to the
sample-space Gram, ``J^T w`` and ``J v``, and the dense curvature block its K-FAC factors claim,
are compared with matrices built independently from the per-sample gradient matrix ``J`` of a
tiny float64 model (autodiff), on both backends:

* ``linear`` and ``conv2d`` on the model builders' taps (``tiny-ce``, a sequence model, a conv
  net); K-FAC's block of one sample at one position is exactly ``g g^T``, and for every layer the
  dense block acts on a flat vector as ``T G [W, b] A`` does on the layer's matrix;
* ``embedding`` and ``layer_norm`` on a standalone layer (their taps computed here by autodiff:
  the builders do not record them yet); the embedding's ``A`` is diagonal and its block of one
  sample at one position is ``g g^T``; the scale-and-shift block is the diagonal of the
  empirical Fisher ``1/B J^T J`` exactly;
* ``embedding`` and ``layer_norm`` through both model builders (test-only subclasses that set
  ``tapped``): the builders' generic taps give ``TapJacobian`` the exact Gram, ``J^T w``, ``J v``;
* ``untapped``: the dense fallback's per-block parts (``J_b J_b^T``, ``J_b^T w``) agree with the
  tap rule of a kind it stands in for (layer norm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from backends import layer_kinds
from backends.jax import build_problem as jax_build_problem
from backends.jax import sample_space as jax_ss
from backends.jax.ops import JAX_OPS
from backends.layout import ParamBlock, TappedLayer
from backends.torch import build_problem as torch_build_problem
from backends.torch import sample_space as torch_ss
from backends.torch.ops import TORCH_OPS
from suites.layers import Embedding, Flatten, LayerNorm, Linear, ModelSpec, Tanh
from suites.spec import Budget, Dataset, Suite
from tests import test_jax_sample_space as jax_fixtures
from tests.fixtures_torch_sample_space import CONV, SEQUENCE, dense_jacobian, problem_oracle

jax.config.update("jax_enable_x64", True)

TOL = {"rtol": 1e-9, "atol": 1e-11}
SUITES = [("tiny-ce", "tiny-ce"), ("sequence", SEQUENCE), ("conv", CONV)]


def _np(x: Any) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _blocks(ops: Any, layer: TappedLayer, a: Any, e: Any, w: Any, v: Any) -> dict[str, Any]:
    """The kind's Gram, ``J^T w``, ``J v`` and K-FAC blocks (batch and first sample), ``A``, ``G``."""
    kind = layer_kinds.rule(layer)
    f = kind.factors(ops, layer, a, e)
    A, G = kind.kfac_factors(ops, layer, a, [e])
    A1, G1 = kind.kfac_factors(ops, layer, a[:1], [e[:1]])
    return {
        "gram": kind.gram(ops, f),
        "rmatvec": ops.concat(kind.rmatvec(ops, f, w)),
        "matvec": kind.matvec(ops, f, v),
        "dense": kind.to_dense(ops, layer, A, G, layer.positions),
        "one": kind.to_dense(ops, layer, A1, G1, layer.positions),
        "A": A,
        "G": G,
    }


def _check_layers(
    ops: Any, layers: Sequence[TappedLayer], inputs: Sequence[Any], grads: Sequence[Any], J: np.ndarray
) -> list[dict[str, Any]]:
    """Every layer's Gram, ``J^T w``, ``J v`` and K-FAC block against its columns of ``J`` (JAX:
    the kinds' maths jitted together, one compilation)."""
    rng = np.random.default_rng(2)
    w, v = rng.normal(size=J.shape[0]), rng.normal(size=J.shape[1])

    def blocks(inputs: Sequence[Any], grads: Sequence[Any], w: Any, v: Any) -> list[dict[str, Any]]:
        return [_blocks(ops, layer, a, e, w, v) for layer, a, e in zip(layers, inputs, grads, strict=True)]

    if ops is TORCH_OPS:
        outs = blocks(inputs, grads, torch.as_tensor(w), torch.as_tensor(v))
    else:
        outs = jax.jit(blocks)(list(inputs), list(grads), jnp.asarray(w), jnp.asarray(v))
    results = []
    for layer, out in zip(layers, outs, strict=True):
        out = {k: None if x is None else _np(x) for k, x in out.items()}
        lo, hi = layer.weight.offset, layer.weight.offset + layer.size
        J_l = J[:, lo:hi]
        np.testing.assert_allclose(out["gram"], J_l @ J_l.T, **TOL)
        np.testing.assert_allclose(out["rmatvec"], J_l.T @ w, **TOL)
        np.testing.assert_allclose(out["matvec"], J_l @ v[lo:hi], **TOL)
        assert out["dense"].shape == (layer.size, layer.size)
        np.testing.assert_allclose(out["dense"], out["dense"].T, **TOL)
        if layer.positions == 1:  # one sample at one position: exactly g g^T
            np.testing.assert_allclose(out["one"], np.outer(J_l[0], J_l[0]), **TOL)
        results.append(out)
    return results


def _check_kronecker_action(layer: TappedLayer, dense: np.ndarray, A: np.ndarray, G: np.ndarray) -> None:
    """``to_dense(A, G) x`` equals ``T G X A`` on the layer's ``[W, b]`` matrix ``X``: the
    flattening and the dense block agree (dense kinds)."""
    kind = layer_kinds.rule(layer)
    x = np.random.default_rng(4).normal(size=layer.size)
    index = kind.canonical_index(layer)
    X = x[index].reshape(G.shape[0], -1)
    expected = np.empty(layer.size)
    expected[index] = (layer.positions * G @ X @ A).reshape(-1)
    np.testing.assert_allclose(dense @ x, expected, **TOL)


@pytest.mark.parametrize(("name", "suite"), SUITES)
def test_dense_kinds_match_autodiff_torch(name: str, suite: Any) -> None:
    p, b, o = problem_oracle(suite)
    J = dense_jacobian(p, b).numpy()
    outs = _check_layers(TORCH_OPS, p.layout.tapped, o.tap_inputs(), o.tap_grads(), J)
    for layer, out in zip(p.layout.tapped, outs, strict=True):
        _check_kronecker_action(layer, out["dense"], out["A"], out["G"])


@pytest.mark.slow
def test_dense_kinds_match_autodiff_jax() -> None:
    """The torch test's checks on the JAX builders' taps, every suite in one test (slow: the JAX
    oracle's taps and the jitted kind maths compile per suite)."""
    for name, _ in SUITES:
        p = jax_fixtures.problem(name)
        b = p.device_batch(0)
        J = jax_fixtures.dense_jacobian(p, b)
        o = p.oracle(p.params0, b, taps=True)
        outs = _check_layers(JAX_OPS, p.layout.tapped, o.tap_inputs(), o.tap_grads(), J)
        for layer, out in zip(p.layout.tapped, outs, strict=True):
            _check_kronecker_action(layer, out["dense"], out["A"], out["G"])


# --------------------------------------------------------------------------- standalone layers

B, T, VOCAB, DIM = 5, 3, 7, 4


def _embedding_layer() -> TappedLayer:
    spec = Embedding(VOCAB, DIM)
    weight = ParamBlock("0.weight", 0, "weight", (VOCAB, DIM), 0, VOCAB * DIM)
    return TappedLayer(0, 0, spec, weight, None, "0", (T,))


def _norm_layer() -> TappedLayer:
    spec = LayerNorm(DIM)
    weight = ParamBlock("0.weight", 0, "weight", (DIM,), 0, DIM)
    bias = ParamBlock("0.bias", 0, "bias", (DIM,), DIM, DIM)
    return TappedLayer(0, 0, spec, weight, bias, "0", (T, DIM))


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, VOCAB, size=(B, T))
    ids[0, 1] = ids[0, 0]  # a repeated token within a sample
    return {
        "ids": ids,
        "table": rng.normal(size=(VOCAB, DIM)),
        "x": rng.normal(size=(B, T, DIM)),
        "gamma": 1.0 + 0.3 * rng.normal(size=DIM),
        "beta": 0.2 * rng.normal(size=DIM),
        "y": rng.normal(size=(B, T, DIM)),
    }


def _loss_of_outputs(s: Any, y: Any, sin: Any) -> Any:
    """A per-sample loss of the layer outputs with a nonlinear cotangent."""
    return (sin(s) * y).sum()


def _taps_torch(kind: str, d: dict[str, np.ndarray]) -> tuple[np.ndarray, Any, Any]:
    """``(J, a, e)`` for the standalone layer: per-sample gradients and the taps, by autodiff."""
    y = torch.as_tensor(d["y"])
    if kind == "embedding":
        ids = torch.as_tensor(d["ids"])

        def outputs(theta: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return theta.reshape(VOCAB, DIM)[i]

        theta, xs, a = torch.as_tensor(d["table"]).reshape(-1), ids, ids.to(torch.float64)
    else:
        x = torch.as_tensor(d["x"])

        def outputs(theta: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.layer_norm(i, (DIM,), theta[:DIM], theta[DIM:], eps=1e-5)

        theta, xs, a = torch.as_tensor(np.concatenate([d["gamma"], d["beta"]])), x, x

    def loss(th: torch.Tensor, i: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return _loss_of_outputs(outputs(th, i), yy, torch.sin)

    J = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(theta, xs, y)
    s = torch.func.vmap(outputs, in_dims=(None, 0))(theta, xs)
    e = torch.cos(s) * y
    return J.numpy(), a, e


def _taps_jax(kind: str, d: dict[str, np.ndarray]) -> tuple[np.ndarray, Any, Any]:
    y = jnp.asarray(d["y"])

    def normalise(i: jax.Array) -> jax.Array:
        mu = i.mean(-1, keepdims=True)
        return (i - mu) / jnp.sqrt(((i - mu) ** 2).mean(-1, keepdims=True) + 1e-5)

    if kind == "embedding":
        ids = jnp.asarray(d["ids"])

        def outputs(theta: jax.Array, i: jax.Array) -> jax.Array:
            return theta.reshape(VOCAB, DIM)[i]

        theta, xs, a = jnp.asarray(d["table"]).reshape(-1), ids, ids.astype(jnp.float64)
    else:
        x = jnp.asarray(d["x"])

        def outputs(theta: jax.Array, i: jax.Array) -> jax.Array:
            return normalise(i) * theta[:DIM] + theta[DIM:]

        theta, xs, a = jnp.asarray(np.concatenate([d["gamma"], d["beta"]])), x, x

    def loss(th: jax.Array, i: jax.Array, yy: jax.Array) -> jax.Array:
        return _loss_of_outputs(outputs(th, i), yy, jnp.sin)

    J = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(theta, xs, y)
    e = jnp.cos(jax.vmap(outputs, in_axes=(None, 0))(theta, xs)) * y
    return np.asarray(J), a, e


BACKENDS = {"torch": (TORCH_OPS, _taps_torch), "jax": (JAX_OPS, _taps_jax)}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_embedding_kind_matches_autodiff(backend: str) -> None:
    ops, taps = BACKENDS[backend]
    layer = _embedding_layer()
    J, a, e = taps("embedding", _data())
    _check_layers(ops, [layer], [a], [e], J)
    kind = layer_kinds.rule(layer)
    A, G = kind.kfac_factors(ops, layer, a, [e])
    # A is the diagonal of the one-hot second moment, which has nothing off the diagonal.
    hot = _np(kind.inputs(ops, layer, a)).reshape(-1, VOCAB)
    full = hot.T @ hot / hot.shape[0]
    np.testing.assert_allclose(np.diag(_np(A)), full, **TOL)
    # One sample at one position: the claimed block is exactly g g^T.
    e1 = e[:1, :1]
    A1, G1 = kind.kfac_factors(ops, layer, a[:1, :1], [e1])
    g = np.zeros((VOCAB, DIM))
    g[int(_data()["ids"][0, 0])] = _np(e1)[0, 0]
    np.testing.assert_allclose(_np(kind.to_dense(ops, layer, A1, G1, 1)), np.outer(g, g), **TOL)
    # The whole batch: T (diag(A) kron G).
    dense = _np(kind.to_dense(ops, layer, A, G, layer.positions))
    np.testing.assert_allclose(dense, np.kron(np.diag(_np(A)), T * _np(G)), **TOL)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_layer_norm_kind_matches_autodiff(backend: str) -> None:
    ops, taps = BACKENDS[backend]
    layer = _norm_layer()
    J, a, e = taps("layer_norm", _data())
    _check_layers(ops, [layer], [a], [e], J)
    kind = layer_kinds.rule(layer)
    A, G = kind.kfac_factors(ops, layer, a, [e])
    assert A is None
    exact = J.T @ J / B  # the empirical Fisher block
    np.testing.assert_allclose(_np(kind.to_dense(ops, layer, A, G, layer.positions)), np.diag(np.diag(exact)), **TOL)
    # Two cotangent passes sum (the exact estimator's convention).
    _, G2 = kind.kfac_factors(ops, layer, a, [e, e])
    np.testing.assert_allclose(_np(G2), 2 * _np(G), **TOL)
    # The untapped fallback on the same parameters (the dense J's columns) agrees with the taps.
    f = kind.factors(ops, layer, a, e)
    as_array = torch.as_tensor if backend == "torch" else jnp.asarray
    w = np.linspace(-1.0, 1.0, B)
    fallback = layer_kinds.UNTAPPED
    np.testing.assert_allclose(_np(fallback.gram(ops, as_array(J))), _np(kind.gram(ops, f)), **TOL)
    np.testing.assert_allclose(
        _np(fallback.rmatvec(ops, as_array(J), as_array(w))), _np(ops.concat(kind.rmatvec(ops, f, as_array(w)))), **TOL
    )
    assert not _np(fallback.to_dense(ops, layer.size, as_array(J))).any()


def test_every_kind_is_covered() -> None:
    covered = {"linear", "conv2d", "embedding", "layer_norm"}
    assert covered == layer_kinds.tapped_kinds()


# --------------------------------------------------------------------------- through the builders


@dataclass(frozen=True)
class _TappedEmbedding(Embedding):
    """An embedding the builders tap (the suites' layer leaves it untapped today)."""

    tapped: ClassVar[bool] = True


@dataclass(frozen=True)
class _TappedLayerNorm(LayerNorm):
    tapped: ClassVar[bool] = True


def _token_suite() -> Suite:
    model = ModelSpec(
        (T,), (_TappedEmbedding(VOCAB, DIM), _TappedLayerNorm(DIM), Tanh(), Flatten(), Linear(T * DIM, 3))
    )

    def load() -> Dataset:
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, VOCAB, size=(40, T)), rng.integers(0, 3, size=40)
        return Dataset(x[:32], y[:32], x[32:], y[32:])

    return Suite(
        name="test-tokens",
        version=1,
        description="ad-hoc test model",
        paper="test",
        model=model,
        likelihood="softmax_ce",
        batch_size=6,
        budget=Budget(steps=4),
        eval_every=2,
        load=load,
        size="test",
    )


def test_builders_tap_embedding_and_layer_norm_torch() -> None:
    """The builders' taps (layer input, output cotangent) of an embedding and a layer norm give
    the exact Gram, ``J^T w`` and ``J v`` through ``TapJacobian``."""
    p = torch_build_problem(_token_suite(), seed=0, dtype="float64")
    assert [t.kind for t in p.layout.tapped] == ["embedding", "layer_norm", "linear"]
    b = p.device_batch(0)
    jac = torch_ss.true_jacobian(p.oracle(p.params0, b, taps=True))
    assert isinstance(jac, torch_ss.TapJacobian)
    J = dense_jacobian(p, b).numpy()
    w = np.linspace(-1.0, 1.0, jac.rows)
    np.testing.assert_allclose(_np(jac.gram()), J @ J.T, **TOL)
    np.testing.assert_allclose(_np(jac.rmatvec(torch.as_tensor(w))), J.T @ w, **TOL)
    np.testing.assert_allclose(_np(jac.matvec(p.params0)), J @ _np(p.params0), **TOL)


def test_builders_tap_embedding_and_layer_norm_jax() -> None:
    p = jax_build_problem(_token_suite(), seed=0, dtype="float64")
    b = p.device_batch(0)
    w = jnp.linspace(-1.0, 1.0, p.batch_size)

    def ops(params: jax.Array, batch: Any) -> Any:
        jac = jax_ss.true_jacobian(p.oracle(params, batch, taps=True))
        return isinstance(jac, jax_ss.TapJacobian), jac.gram(), jac.rmatvec(w), jac.matvec(params)

    tapped, gram, rmatvec, matvec = p.jit(ops)(p.params0, b)
    J = jax_fixtures.dense_jacobian(p, b)
    assert tapped
    np.testing.assert_allclose(_np(gram), J @ J.T, **TOL)
    np.testing.assert_allclose(_np(rmatvec), J.T @ _np(w), **TOL)
    np.testing.assert_allclose(_np(matvec), J @ _np(p.params0), **TOL)
