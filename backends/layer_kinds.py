"""One registered object per layer kind: its flattening, Gram, ``J^T w``, K-FAC factors, dense block.

A layer kind answers, once for both frameworks (on the array operations of
:class:`backends.array_ops.ArrayOps`), every question the curvature methods ask of a layer:

* **flattening**: how the layer's raw taps (its input ``a`` and the cotangent ``e`` of its
  output, recorded by the backend's model builder) become per-position rows whose outer
  products are the per-sample gradients, and where those gradients sit in the flat parameter
  vector (:meth:`LayerKind.canonical_index`);
* **sample space** (EF, iEF, SF, FNGD; ``backends.sample_space``): the layer's contribution to
  the Gram ``K = J J^T`` and to ``J^T w`` and ``J v``, from the taps, without forming ``J``;
* **K-FAC** (``backends/*/kfac_factors.py``): its curvature factors
  (:meth:`LayerKind.kfac_factors`) and :meth:`LayerKind.to_dense`, the dense block those
  factors claim, in the canonical flat layout (kfac-jax's ``to_dense_matrix`` discipline: each
  block can be checked against a dense matrix built independently by autodiff).

Kinds registered here:

* ``linear`` (:class:`DenseKind`): ``s = W a (+ b)`` at ``T`` positions (1 on vectors, ``T``
  on sequences); per-sample gradient ``sum_t e_t a_t^T`` (``W``, C order ``(out, in)``) and
  ``sum_t e_t`` (``b``); K-FAC block ``T (G kron A)`` with ``A = 1/(B T) sum abar abar^T``,
  ``G = 1/(B T) sum e e^T`` (Martens & Grosse 2015; Grosse & Martens 2016 for ``T > 1``, with
  kfac-jax's ``num_locations`` normalisation);
* ``conv2d`` (:class:`Conv2dKind`): the same maths on unfolded, channel-major patches;
* ``embedding`` (:class:`EmbeddingKind`): ``s_t = W[id_t]``, i.e. a dense layer on one-hot
  inputs with the weight stored ``(vocab, dim)`` (input-major); ``A`` is then exactly diagonal
  (the token frequencies) and is kept as its diagonal, the block is ``T (diag(A) kron G)``;
* ``layer_norm`` (:class:`ScaleShiftKind`): ``s = gamma * xhat + beta``, ``xhat`` the
  normalised input; per-sample gradients ``sum_t e_t * xhat_t`` and
  ``sum_t e_t``; K-FAC's block is diagonal, ``1/B sum_n g_n^2`` (kfac-jax's
  ``ScaleAndShiftDiagonal``);
* ``untapped`` (:data:`UNTAPPED`): parameters the tap maths cannot rebuild; the sample-space
  maths uses their columns of the dense ``J`` (autodiff's per-sample gradients) and K-FAC
  claims no curvature for them (a zero block; the preconditioner scales them).

The model builders tap every layer the layout lists as tapped in the same way (its input and
the cotangent of its output), so all four kinds work through both builders. The suites' layer
specs mark ``linear`` and ``conv2d`` as tapped (``suites.layers``' ``tapped`` flag); an
``embedding`` or ``layer_norm`` there still takes the ``untapped`` path: their K-FAC blocks
are not Kronecker products of a ``(out, in)`` weight, and ``backends.kfac_maths``' inverses and
preconditioner handle only those.

Adding a kind is one subclass and one :func:`register` call here (and its spec marked
``tapped``; docs/architecture.md, "Adding a layer kind"); :func:`rule` fails loudly for a
kind without one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import numpy as np

from backends.array_ops import Array, ArrayOps
from suites.layers import Conv2d, Layer

if TYPE_CHECKING:
    from backends.layout import TappedLayer


def positions_gram_path(batch: int, positions: int, d_in: int, d_out: int) -> str:
    """``"positions"`` or ``"per_sample"``: the cheaper way (multiply-adds) to a layer's Gram.

    Summing over position pairs, ``K_ij = sum_{t,s} (e_it . e_js)(a_bar_it . a_bar_js)``, costs
    ``B^2 T^2 (d_in + d_out)``; forming the layer's per-sample gradients ``sum_t e_nt a_nt^T``
    and their Gram costs ``B T d_in d_out + B^2 d_in d_out``.
    """
    pairs = batch * batch * positions * positions * (d_in + d_out + 1)
    per_sample = batch * positions * d_in * d_out + batch * batch * (d_in + 1) * d_out
    return "positions" if pairs <= per_sample else "per_sample"


class LayerFactors(NamedTuple):
    """One tapped layer's taps in factor form, ``D`` stacked sets of cotangents.

    ``e``: ``(D, B, d_out)`` or ``(D, B, T, d_out)``; ``a``: ``(B, d_in)`` or ``(B, T, d_in)``
    (the kind's :meth:`LayerKind.inputs` rows).
    """

    layer: TappedLayer
    e: Array
    a: Array

    @property
    def has_positions(self) -> bool:
        return self.a.ndim == 3

    @property
    def bias(self) -> bool:
        return self.layer.bias is not None


def _kron(ops: ArrayOps, left: Array, right: Array) -> Array:
    """``left kron right`` for matrices."""
    m, n = left.shape[0] * right.shape[0], left.shape[1] * right.shape[1]
    return ops.einsum("ij,kl->ikjl", left, right).reshape(m, n)


def _permute(block: Array, index: np.ndarray) -> Array:
    """``out[index[p], index[q]] = block[p, q]``: a block in factor order moved to the flat layout."""
    inverse = np.argsort(index)
    return block[inverse][:, inverse]


class LayerKind:
    """The dense kind (``linear``): ``s = W a (+ b)``; the base every tapped kind refines.

    Per-sample gradient ``sum_t e_t abar_t^T`` with ``abar = [a, 1]``; the flat layout is ``W``
    (C order ``(out, in)``) then ``b``.
    """

    kind: ClassVar[str] = "linear"
    #: EGN's taps Gram (``backends.egn_gram.tap_gram``) applies: ``grad_W l_nk = e_nk abar_n^T``
    #: with one position and ``W`` stored ``(out, in)``.
    egn_taps: ClassVar[bool] = True

    # ------------------------------------------------------------------ flattening

    def positions(self, output_shape: tuple[int, ...]) -> int:
        """``T`` for a per-sample pre-activation shape (the tap ``e`` without the batch axis)."""
        return int(max(1, math.prod(output_shape[:-1])))

    def inputs(self, ops: ArrayOps, layer: TappedLayer, a: Array) -> Array:
        """``a`` as ``(B, d_in)`` (no positions) or ``(B, T, d_in)``."""
        return a if a.ndim == 2 else a.reshape(a.shape[0], -1, a.shape[-1])

    def outputs(self, ops: ArrayOps, layer: TappedLayer, e: Array) -> Array:
        """``e`` as ``(N, d_out)`` (no positions) or ``(N, T, d_out)``."""
        return e if e.ndim == 2 else e.reshape(e.shape[0], -1, e.shape[-1])

    def factors(self, ops: ArrayOps, layer: TappedLayer, a: Array, e: Array, draws: int = 1) -> LayerFactors:
        """The raw taps (``a`` from the forward, ``e`` stacked over ``draws``) in factor form."""
        a_f = self.inputs(ops, layer, a)
        e_f = self.outputs(ops, layer, e)
        return LayerFactors(layer, e_f.reshape(draws, a_f.shape[0], *e_f.shape[1:]), a_f)

    def canonical_index(self, layer: TappedLayer) -> np.ndarray:
        """Positions (relative to the layer's first parameter) of ``vec_row_major([W, b])``'s
        entries in the flat layout (``W`` row-major, then ``b``)."""
        out_dim = layer.weight.shape[0]
        k = layer.weight.size // out_dim
        cols = k + (1 if layer.bias is not None else 0)
        o, i = np.meshgrid(np.arange(out_dim), np.arange(cols), indexing="ij")
        bias_offset = layer.bias.offset if layer.bias is not None else 0
        idx = np.where(i < k, layer.weight.offset + o * k + i, bias_offset + o)
        return (idx - layer.weight.offset).reshape(-1)

    # ------------------------------------------------------------------ sample space

    def gram(self, ops: ArrayOps, f: LayerFactors) -> Array:
        """The layer's ``K_layer = J_l J_l^T`` (``R x R``, ``R = D B``): the Hadamard form
        ``(E E^T) * (Abar Abar^T)``, over position pairs or from per-sample gradients
        (:func:`positions_gram_path`) where the layer has positions."""
        draws, batch = f.e.shape[0], f.e.shape[1]
        rows = draws * batch
        if not f.has_positions:
            e = f.e.reshape(rows, -1)
            aa = f.a @ f.a.T
            if f.bias:
                aa = aa + 1.0
            if draws > 1:  # the draws share the inputs: broadcast A A^T over the draw blocks
                ee = (e @ e.T).reshape(draws, batch, draws, batch)
                return (ee * aa[:, None, :]).reshape(rows, rows)
            return (e @ e.T) * aa
        positions, d_out, d_in = f.a.shape[1], f.e.shape[-1], f.a.shape[-1]
        if positions_gram_path(batch, positions, d_in, d_out) == "positions":
            e2 = f.e.reshape(rows * positions, d_out)
            a2 = f.a.reshape(batch * positions, d_in)
            ee = (e2 @ e2.T).reshape(draws, batch, positions, draws, batch, positions)
            aa = (a2 @ a2.T).reshape(batch, positions, batch, positions)
            if f.bias:
                aa = aa + 1.0
            return ops.einsum("pitqjs,itjs->piqj", ee, aa).reshape(rows, rows)
        g = ops.einsum("pbto,bti->pboi", f.e, f.a).reshape(rows, d_out * d_in)
        k = g @ g.T
        if f.bias:
            gb = ops.sum(f.e, axis=2).reshape(rows, d_out)
            k = k + gb @ gb.T
        return k

    def gram_rows(self, ops: ArrayOps, f: LayerFactors, first_draw: int) -> Array:
        """Rows ``first_draw * B:`` of :meth:`gram` (those draws against every row,
        ``(D - first_draw) B x D B``): SF needs only its sampled rows of ``K_all``. Without
        positions only those rows' products ``E_rows E^T`` are formed (the same entries as the
        full Gram's, which is what any other case slices)."""
        if f.has_positions or type(self).gram is not LayerKind.gram:
            return self.gram(ops, f)[first_draw * f.e.shape[1] :]
        draws, batch = f.e.shape[0], f.e.shape[1]
        kept = draws - first_draw
        rows = f.e[first_draw:].reshape(kept * batch, -1)
        aa = f.a @ f.a.T
        if f.bias:
            aa = aa + 1.0
        if draws == 1:
            return (rows @ rows.T) * aa
        ee = (rows @ f.e.reshape(draws * batch, -1).T).reshape(kept, batch, draws, batch)
        return (ee * aa[:, None, :]).reshape(kept * batch, draws * batch)

    def _weighted_cotangents(self, ops: ArrayOps, f: LayerFactors, w: Array) -> Array:
        """``sum_draws w * e`` as rows ``(B [T], d_out)`` (draws share the inputs)."""
        draws, batch = f.e.shape[0], f.e.shape[1]
        weighted = f.e * w.reshape(draws, batch, *((1,) * (f.e.ndim - 2)))
        ew = weighted[0] if draws == 1 else ops.sum(weighted, axis=0)
        return ew if ew.ndim == 2 else ew.reshape(-1, ew.shape[-1])

    def rmatvec(self, ops: ArrayOps, f: LayerFactors, w: Array) -> list[Array]:
        """``[vec(E^T diag(w) A), E^T w]`` (weight, then bias) for ``w`` of shape ``(R,)``."""
        ew = self._weighted_cotangents(ops, f, w)
        a = f.a if f.a.ndim == 2 else f.a.reshape(-1, f.a.shape[-1])
        parts = [(ew.T @ a).reshape(-1)]
        if f.bias:
            parts.append(ops.sum(ew, axis=0))
        return parts

    def _tangent(self, f: LayerFactors, v: Array) -> Array:
        """The pre-activation tangent ``W_v a (+ b_v)`` at every position, ``(B [T], d_out)``."""
        layer = f.layer
        w_v = v[layer.weight.offset : layer.weight.stop].reshape(f.e.shape[-1], -1)
        u = f.a.reshape(-1, w_v.shape[1]) @ w_v.T
        if layer.bias is not None:
            u = u + v[layer.bias.offset : layer.bias.stop]
        return u

    def matvec(self, ops: ArrayOps, f: LayerFactors, v: Array) -> Array:
        """``<grad_layer l_r, v_layer>`` for every row ``r``: ``sum e . (W_v a + b_v)``."""
        prod = f.e * self._tangent(f, v).reshape(f.e.shape[1:])
        return ops.sum(prod.reshape(prod.shape[0] * prod.shape[1], -1), axis=-1)

    # ------------------------------------------------------------------ K-FAC

    def input_factor(self, ops: ArrayOps, layer: TappedLayer, a: Array) -> Array:
        """``A = 1/(B T) sum abar abar^T`` (the bias coordinate last)."""
        rows = self.inputs(ops, layer, a)
        rows = rows.reshape(-1, rows.shape[-1])
        if layer.bias is not None:
            rows = ops.concat([rows, ops.ones_like(rows[:, :1])], axis=1)
        return rows.T @ rows / rows.shape[0]

    def output_factor(self, ops: ArrayOps, layer: TappedLayer, passes: list[Array]) -> Array:
        """``G = 1/(B T) sum e e^T``, summed over cotangent passes (the exact estimator: one pass
        per column of the output Hessian's square root)."""
        rows = [self.outputs(ops, layer, e) for e in passes]
        rows = ops.concat([r.reshape(-1, r.shape[-1]) for r in rows])
        return rows.T @ rows / (rows.shape[0] // len(passes))

    def kfac_factors(self, ops: ArrayOps, layer: TappedLayer, a: Array, passes: list[Array]) -> tuple[Array, Array]:
        """``(A, G)``: the layer's K-FAC factors from its inputs and cotangent passes."""
        return self.input_factor(ops, layer, a), self.output_factor(ops, layer, passes)

    def to_dense(self, ops: ArrayOps, layer: TappedLayer, A: Array, G: Array, locations: int) -> Array:
        """The block K-FAC claims for the layer, ``T (G kron A)``, in its canonical flat layout."""
        return _permute(_kron(ops, G * locations, A), self.canonical_index(layer))


#: The dense (``linear``) kind is the base class.
DenseKind = LayerKind


class Conv2dKind(LayerKind):
    """A Conv2d: NCHW inputs unfolded into channel-major patches ``(C_in, kh, kw)`` (the
    flattened ``(out, in, kh, kw)`` weight's columns), NCHW cotangents moved to channels-last."""

    kind: ClassVar[str] = "conv2d"
    egn_taps: ClassVar[bool] = False

    def positions(self, output_shape: tuple[int, ...]) -> int:
        return int(output_shape[1] * output_shape[2])

    def inputs(self, ops: ArrayOps, layer: TappedLayer, a: Array) -> Array:
        spec = layer.layer
        assert isinstance(spec, Conv2d)
        return ops.conv_patches(a, spec.kernel_size, spec.stride, spec.padding)

    def outputs(self, ops: ArrayOps, layer: TappedLayer, e: Array) -> Array:
        return ops.swap_last(e.reshape(e.shape[0], e.shape[1], -1))


class EmbeddingKind(LayerKind):
    """An embedding ``s_t = W[id_t]``: a bias-free dense layer on one-hot inputs whose weight is
    stored input-major, ``(vocab, dim)``.

    Taps: ``a`` the integer ids ``(B, T)`` (any float dtype holding integers), ``e`` the output
    cotangents ``(B, T, dim)``. :meth:`inputs` makes the one-hot rows ``(B, T, vocab)``.
    The per-sample gradient is ``sum_t onehot_t e_t^T`` (``(vocab, dim)``, C order), the
    transpose of the dense kind's orientation. K-FAC: ``A = 1/(B T) sum onehot onehot^T`` is
    diagonal (token frequencies), kept as that diagonal ``(vocab,)``; the block is
    ``T (diag(A) kron G)`` in the flat layout (input-major, so no permutation).
    """

    kind: ClassVar[str] = "embedding"
    egn_taps: ClassVar[bool] = False

    def positions(self, output_shape: tuple[int, ...]) -> int:
        return int(max(1, math.prod(output_shape[:-1])))

    def inputs(self, ops: ArrayOps, layer: TappedLayer, a: Array) -> Array:
        vocab = layer.weight.shape[0]
        ids = a.reshape(a.shape[0], -1)
        codes = ops.asarray(np.arange(vocab), ops.float64, ids)
        hot = ops.astype(ids, ops.float64)[..., None] == codes
        return ops.where(hot, 1.0, 0.0)

    def factors(self, ops: ArrayOps, layer: TappedLayer, a: Array, e: Array, draws: int = 1) -> LayerFactors:
        f = super().factors(ops, layer, a, e, draws)
        return f._replace(a=ops.astype(f.a, f.e.dtype))

    def outputs(self, ops: ArrayOps, layer: TappedLayer, e: Array) -> Array:
        return e.reshape(e.shape[0], -1, e.shape[-1])

    def canonical_index(self, layer: TappedLayer) -> np.ndarray:
        return np.arange(layer.weight.size)

    def rmatvec(self, ops: ArrayOps, f: LayerFactors, w: Array) -> list[Array]:
        ew = self._weighted_cotangents(ops, f, w)
        return [(f.a.reshape(-1, f.a.shape[-1]).T @ ew).reshape(-1)]

    def _tangent(self, f: LayerFactors, v: Array) -> Array:
        layer = f.layer
        w_v = v[layer.weight.offset : layer.weight.stop].reshape(layer.weight.shape)
        return f.a.reshape(-1, w_v.shape[0]) @ w_v

    def input_factor(self, ops: ArrayOps, layer: TappedLayer, a: Array) -> Array:
        """The diagonal of ``A``, ``(vocab,)``: each token's share of the ``B T`` positions."""
        rows = self.inputs(ops, layer, a)
        return ops.mean(rows.reshape(-1, rows.shape[-1]), axis=0)

    def to_dense(self, ops: ArrayOps, layer: TappedLayer, A: Array, G: Array, locations: int) -> Array:
        return _kron(ops, A[:, None] * ops.eye(A.shape[0], A.dtype, A), G * locations)


class ScaleShiftKind(LayerKind):
    """A scale-and-shift layer ``s = gamma * xhat + beta`` (``layer_norm``: ``xhat`` the
    normalised input); ``gamma`` then ``beta`` in the flat vector.

    Taps: ``a`` the layer input ``x`` (:meth:`inputs` normalises it to ``xhat``) and ``e`` the
    output cotangents, both ``(B, [T,] dim)``, as the builders record any tapped layer. The
    per-sample gradients ``g_n = [sum_t e_t * xhat_t, sum_t e_t]`` are cheap (``B x 2 dim``), so
    the Gram, ``J^T w`` and ``J v`` use them directly. K-FAC: a diagonal block, ``diag(1/B
    sum_n g_n^2)`` (kfac-jax's ``ScaleAndShiftDiagonal``), summed over cotangent passes:
    :meth:`kfac_factors` returns ``(None, diagonal)``.
    """

    kind: ClassVar[str] = "layer_norm"
    egn_taps: ClassVar[bool] = False

    def positions(self, output_shape: tuple[int, ...]) -> int:
        return int(max(1, math.prod(output_shape[:-1])))

    def inputs(self, ops: ArrayOps, layer: TappedLayer, a: Array) -> Array:
        """``xhat = (x - mean) / sqrt(var + eps)`` over the last axis (biased variance, as
        ``nn.LayerNorm``) from the recorded layer input ``x``, as ``(B, T, dim)``."""
        x = a.reshape(a.shape[0], -1, a.shape[-1])
        centred = x - ops.mean(x, axis=-1)[..., None]
        variance = ops.mean(centred * centred, axis=-1)[..., None]
        return centred / ops.sqrt(variance + getattr(layer.layer, "eps", 1e-5))

    def outputs(self, ops: ArrayOps, layer: TappedLayer, e: Array) -> Array:
        return e.reshape(e.shape[0], -1, e.shape[-1])

    def canonical_index(self, layer: TappedLayer) -> np.ndarray:
        return np.arange(layer.size)

    def input_factor(self, ops: ArrayOps, layer: TappedLayer, a: Array) -> Array:
        raise NotImplementedError("a scale-and-shift block has no Kronecker factors: use kfac_factors")

    output_factor = input_factor  # type: ignore[assignment]

    def per_sample(self, ops: ArrayOps, f: LayerFactors) -> Array:
        """Rows ``g_r`` (``(R, dim (+ dim))``): the per-sample gradients of ``gamma`` (and ``beta``)."""
        rows = f.e.shape[0] * f.e.shape[1]
        parts = [ops.sum(f.e * f.a, axis=2).reshape(rows, -1)]
        if f.bias:
            parts.append(ops.sum(f.e, axis=2).reshape(rows, -1))
        return ops.concat(parts, axis=1)

    def gram(self, ops: ArrayOps, f: LayerFactors) -> Array:
        g = self.per_sample(ops, f)
        return g @ g.T

    def rmatvec(self, ops: ArrayOps, f: LayerFactors, w: Array) -> list[Array]:
        return [self.per_sample(ops, f).T @ w]

    def matvec(self, ops: ArrayOps, f: LayerFactors, v: Array) -> Array:
        start = f.layer.weight.offset
        return self.per_sample(ops, f) @ v[start : start + f.layer.size]

    def kfac_factors(self, ops: ArrayOps, layer: TappedLayer, a: Array, passes: list[Array]) -> tuple[None, Array]:
        """``(None, diag(1/B sum_n g_n^2))``, the diagonal summed over cotangent passes."""
        total = None
        for e in passes:
            g = self.per_sample(ops, self.factors(ops, layer, a, e))
            term = ops.mean(g * g, axis=0)
            total = term if total is None else total + term
        return None, total

    def to_dense(self, ops: ArrayOps, layer: TappedLayer, A: Array, G: Array, locations: int) -> Array:
        """``diag(G)``: the diagonal block (``A`` and ``locations`` unused)."""
        return G[:, None] * ops.eye(G.shape[0], G.dtype, G)


class UntappedKind:
    """Parameters the tap maths cannot rebuild: the dense/autodiff fallback.

    Flattening is the parameter's own slice of the flat vector; the sample-space maths reads its
    columns ``J_b`` of the dense per-sample gradient matrix (``backends.sample_space
    .DenseJacobian``); K-FAC claims no curvature for it (:meth:`to_dense` is a zero block; the
    preconditioner multiplies its entries by a scalar, ``backends.kfac_maths.precondition``).
    """

    kind: ClassVar[str] = "untapped"

    def gram(self, ops: ArrayOps, columns: Array) -> Array:
        """``J_b J_b^T`` for the block's columns ``J_b`` (``R x size``)."""
        return columns @ columns.T

    def rmatvec(self, ops: ArrayOps, columns: Array, w: Array) -> Array:
        """``J_b^T w``."""
        return columns.T @ w

    def matvec(self, ops: ArrayOps, columns: Array, v: Array) -> Array:
        """``J_b v_b``."""
        return columns @ v

    def to_dense(self, ops: ArrayOps, size: int, like: Array) -> Array:
        """K-FAC's block: zero (no curvature claimed)."""
        return ops.zeros_like(ops.eye(size, like.dtype, like))


#: The fallback kind of parameters outside tapped layers.
UNTAPPED = UntappedKind()

_RULES: dict[str, LayerKind] = {}


def register(rule: LayerKind) -> LayerKind:
    """Make ``rule`` the rule of the layer kind ``rule.kind`` (one registration per kind)."""
    if rule.kind in _RULES or rule.kind == UNTAPPED.kind:
        raise ValueError(f"layer kind {rule.kind!r} already has a rule")
    _RULES[rule.kind] = rule
    return rule


register(LayerKind())
register(Conv2dKind())
register(EmbeddingKind())
register(ScaleShiftKind())


def tapped_kinds() -> frozenset[str]:
    """The layer kinds with a rule (those the tap-based maths can rebuild gradients for)."""
    return frozenset(_RULES)


def rule(layer: Layer | TappedLayer) -> LayerKind:
    """The rule of ``layer``'s kind; a kind without one is an error naming the known kinds."""
    kind = layer.kind
    try:
        return _RULES[kind]
    except KeyError:
        raise NotImplementedError(
            f"no tap rule for layer kind {kind!r} (known: {sorted(_RULES)}); register one in backends.layer_kinds"
        ) from None
