"""EGN's output-space system, framework-neutral: the Gram of the factored Jacobian and the
direction it gives (Exact Gauss-Newton, docs/methods.md "EGN").

With ``Q_n = S_n S_n^T`` (the output Hessian's factor, ``backends/<b>/optimizers/egn.py``,
``output_factor``), row ``(n, k)`` of ``Jt`` is the flat gradient of ``S_n[:, k] . z_n``. EGN
solves ``(Jt Jt^T + B lam I) v = s`` (``B C x B C``) and steps along ``d = Jt^T v``. Two ways to
``Jt Jt^T`` and ``Jt^T v``, written once here on the array operations of
:class:`backends.array_ops.ArrayOps`:

* taps (every parameter in a Linear layer on vectors): per layer, row ``(n, k)`` is
  ``e_nk abar_n^T`` with ``e_nk`` the tap cotangent of logit cotangent ``S[:, :, k]``, so
  ``Jt Jt^T = sum_layers (E E^T) * (Abar Abar^T)`` and ``Jt^T v`` is, per layer,
  ``(sum_k v_nk e_nk)^T Abar``: no per-sample Jacobian (:func:`tap_gram`, :func:`tap_direction`);
* dense: ``Jt = S^T Jz`` from the output Jacobian (:func:`dense_rows`).

The Gram stays in the working dtype (docs/methods.md, "Where the speed is"); only the solve runs
in float64 (``backends.sample_space.damped_solve``).
"""

from __future__ import annotations

from collections.abc import Sequence

from backends.array_ops import Array, ArrayOps
from backends.layout import ParamLayout


def tap_gram(
    ops: ArrayOps, layout: ParamLayout, inputs: Sequence[Array], cotangents: Sequence[Array]
) -> tuple[Array, list[Array]]:
    """``(Jt Jt^T, abars)``: the ``(B C, B C)`` Gram in the working dtype and each layer's inputs
    with the bias column, ``abar = [a, 1]`` (``(B, d_in (+1))``). ``inputs[i]``: layer ``i``'s
    ``a`` ``(B, d_in)``; ``cotangents[i]``: its ``e`` for the ``C`` factor columns, ``(C, B, out)``."""
    gram = None
    abars = []
    for layer, a, e in zip(layout.tapped, inputs, cotangents, strict=True):
        C, B = e.shape[0], e.shape[1]
        rows = ops.einsum("kbo->bko", e).reshape(B * C, -1)
        abar = a if layer.bias is None else ops.concat([a, ops.ones_like(a[:, :1])], axis=1)
        abars.append(abar)
        term = (rows @ rows.T).reshape(B, C, B, C) * (abar @ abar.T).reshape(B, 1, B, 1)
        gram = term if gram is None else gram + term
    assert gram is not None, "EGN's tap Gram needs at least one tapped layer"
    return gram.reshape(gram.shape[0] * gram.shape[1], -1), abars


def tap_direction(
    ops: ArrayOps, layout: ParamLayout, cotangents: Sequence[Array], abars: Sequence[Array], v: Array
) -> Array:
    """``d = Jt^T v`` (flat, canonical order) for ``v`` reshaped ``(B, C)`` in the working dtype:
    per layer ``[W, b] = (sum_k v_nk e_nk)^T Abar``. Every trainable parameter must be tapped."""
    pieces: dict[str, Array] = {}
    for layer, e, abar in zip(layout.tapped, cotangents, abars, strict=True):
        M = ops.einsum("knl,nk->nl", e, v).T @ abar
        k = layer.weight.size // layer.weight.shape[0]
        pieces[layer.weight.name] = M[:, :k].reshape(-1)
        if layer.bias is not None:
            pieces[layer.bias.name] = M[:, k]
    return ops.concat([pieces[b.name] for b in layout.blocks])


def dense_rows(ops: ArrayOps, S: Array | None, Jz: Array) -> Array:
    """``Jt`` (``B C x P``) from the output Jacobian ``Jz`` (``(B, C, P)``) and the factor ``S``
    (``(B, C, C)``; ``None`` is the identity, e.g. mean squared error)."""
    B, C = Jz.shape[0], Jz.shape[1]
    Jt = Jz if S is None else ops.einsum("nck,ncp->nkp", ops.astype(S, Jz.dtype), Jz)
    return Jt.reshape(B * C, -1)
