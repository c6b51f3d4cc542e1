"""Parameter blocks of the sample-space methods, backend-neutral (pure Python over the layout).

EF, iEF, SF and FNGD see the per-sample gradient matrix ``J`` through its blocks: FNGD gives
each block its own coefficient vector, and both backends' sample-space helpers
(``backends/torch/sample_space.py``, ``backends/jax/sample_space.py``) need the same answers
to three layout questions, answered once here:

* :func:`block_spans`: the contiguous ``[start, stop)`` ranges of the blocks in the flat vector;
* :func:`uses_taps`: whether every block's per-sample gradients can be rebuilt from the taps
  (inputs ``a`` and pre-activation gradients ``e`` of Linear/Conv2d layers), or the dense
  ``J`` is needed;
* :func:`positions_gram_path`: how a layer with positions (Conv2d, a Linear on sequences)
  forms its Gram most cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backends.layout import ParamLayout

#: Tapped layer kinds whose per-sample gradients the sample-space helpers rebuild from the taps.
SUPPORTED_KINDS: frozenset[str] = frozenset({"linear", "conv2d"})


def block_spans(layout: ParamLayout) -> tuple[tuple[int, int], ...]:
    """The ``[start, stop)`` parameter ranges of the sample-space blocks.

    Tapped layers (weight and bias are adjacent in canonical order) and untapped parameter
    blocks, sorted by offset so that concatenating the block slices gives the flat vector.
    """
    spans = [(t.weight.offset, t.bias.stop if t.bias is not None else t.weight.stop) for t in layout.tapped]
    spans += [(b.offset, b.stop) for b in layout.untapped]
    return tuple(sorted(spans))


def uses_taps(layout: ParamLayout) -> bool:
    """Whether the Gram and ``J^T w`` come from the taps (else from the dense ``J``)."""
    return layout.all_tapped and all(t.kind in SUPPORTED_KINDS for t in layout.tapped)


def positions_gram_path(batch: int, positions: int, d_in: int, d_out: int) -> str:
    """``"positions"`` or ``"per_sample"``: the cheaper way (multiply-adds) to a layer's Gram.

    Summing over position pairs, ``K_ij = sum_{t,s} (e_it . e_js)(a_bar_it . a_bar_js)``, costs
    ``B^2 T^2 (d_in + d_out)``; forming the layer's per-sample gradients ``sum_t e_nt a_nt^T``
    and their Gram costs ``B T d_in d_out + B^2 d_in d_out``.
    """
    pairs = batch * batch * positions * positions * (d_in + d_out + 1)
    per_sample = batch * positions * d_in * d_out + batch * batch * (d_in + 1) * d_out
    return "positions" if pairs <= per_sample else "per_sample"


class DenseJacobian:
    """``J`` (``rows x P``) held explicitly: the sample-space operator of models with untapped
    trainable parameters. Framework-neutral (``@``, ``.T`` and slicing); a backend subclass sets
    :attr:`stack` and :attr:`concat` (``torch.stack``/``torch.cat``, ``jnp.stack``/``jnp.concatenate``).
    """

    stack: Callable[[Any], Any]
    concat: Callable[[Any], Any]

    def __init__(self, layout: ParamLayout, jacobian: Any):
        self.layout = layout
        self.jacobian = jacobian
        self.rows = int(jacobian.shape[0])
        self.groups = block_spans(layout)

    def gram(self) -> Any:
        return self.jacobian @ self.jacobian.T

    def group_grams(self) -> Any:
        return self.stack([self.jacobian[:, a:b] @ self.jacobian[:, a:b].T for a, b in self.groups])

    def rmatvec(self, w: Any) -> Any:
        return self.jacobian.T @ w

    def rmatvec_groups(self, w: Any) -> Any:
        return self.concat([self.jacobian[:, a:b].T @ w[i] for i, (a, b) in enumerate(self.groups)])

    def matvec(self, v: Any) -> Any:
        return self.jacobian @ v

    def dense(self) -> Any:
        return self.jacobian
