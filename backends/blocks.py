"""Parameter blocks of the sample-space methods, backend-neutral (pure Python over the layout).

EF, iEF, SF and FNGD see the per-sample gradient matrix ``J`` through its blocks: FNGD gives
each block its own coefficient vector, and the sample-space maths (``backends/sample_space.py``)
needs the answers to these layout questions, answered here:

* :func:`block_spans`: the contiguous ``[start, stop)`` ranges of the blocks in the flat vector;
* :func:`uses_taps`: whether every block's per-sample gradients can be rebuilt from the taps
  (inputs ``a`` and pre-activation gradients ``e`` of Linear/Conv2d layers), or the dense
  ``J`` is needed;
* :func:`linear_on_vectors_only`: whether EGN can form its Gram from the taps;
* :func:`positions_gram_path` (``backends.layer_kinds``): how a layer with positions (Conv2d,
  a Linear on sequences) forms its Gram most cheaply.
"""

from __future__ import annotations

from backends import layer_kinds
from backends.layer_kinds import positions_gram_path
from backends.layout import ParamLayout

__all__ = ["SUPPORTED_KINDS", "block_spans", "linear_on_vectors_only", "positions_gram_path", "uses_taps"]

#: Tapped layer kinds whose per-sample gradients the sample-space helpers rebuild from the taps
#: (those with a rule in ``backends.layer_kinds``).
SUPPORTED_KINDS: frozenset[str] = layer_kinds.tapped_kinds()


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


def linear_on_vectors_only(layout: ParamLayout) -> bool:
    """Every trainable parameter sits in a Linear layer fed 2-D inputs (so ``grad_W l_n = e_n a_n^T``
    with no positions): where EGN forms its Gram from the taps."""
    shapes = layout.spec.shapes
    return layout.all_tapped and all(
        layer_kinds.rule(t).egn_taps and len(shapes[t.layer_index]) == 1 for t in layout.tapped
    )
