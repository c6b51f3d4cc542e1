"""Parameter groups: which parameters a matrix method (Muon, Shampoo, SOAP) treats as matrices.

Optimizers of the Muon family orthogonalise or precondition *hidden weight matrices* and hand
everything else to an element-wise optimizer (AdamW): biases and norm scales (vectors), and the
output layer (the *head*, whose rows are per-class and which Jordan et al. train with AdamW).
This module labels each block of a :class:`~backends.layout.ParamLayout` with one of

* ``"matrix"``: the weight of a tapped layer (Linear ``(d_out, d_in)``; Conv2d
  ``(c_out, c_in, kh, kw)``, which matrix methods reshape to ``(c_out, c_in kh kw)``), except the head;
* ``"head"``: the weight of the last tapped layer (the one producing the logits);
* ``"vector"``: everything else (biases, norm scales, any parameter of fewer than two axes).

Framework-neutral: it reads only the layout, so a torch and a JAX wrapper of one method split the
parameters identically (``wrap_torch_optimizer``, ``wrap_optax``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from backends.layout import ParamBlock, ParamLayout

Label = Literal["matrix", "head", "vector"]
LABELS: tuple[Label, ...] = ("matrix", "head", "vector")


def head_block(layout: ParamLayout) -> ParamBlock | None:
    """The weight of the last tapped layer (the output layer), or ``None`` without tapped layers."""
    return layout.tapped[-1].weight if layout.tapped else None


def param_labels(layout: ParamLayout) -> dict[str, Label]:
    """``{block name: label}`` in canonical (flat-vector) order; see the module docstring."""
    tapped_weights = {t.weight.name for t in layout.tapped}
    head = head_block(layout)
    out: dict[str, Label] = {}
    for block in layout.blocks:
        if head is not None and block.name == head.name:
            out[block.name] = "head"
        elif block.name in tapped_weights and len(block.shape) >= 2:
            out[block.name] = "matrix"
        else:
            out[block.name] = "vector"
    return out


def blocks_labelled(layout: ParamLayout, labels: Mapping[str, Label], wanted: frozenset[str]) -> list[ParamBlock]:
    """The blocks whose label is in ``wanted``, in canonical order."""
    return [b for b in layout.blocks if labels[b.name] in wanted]


def select_labels(selection: str) -> frozenset[str]:
    """The labels of a named selection: ``all``, ``matrices`` (``matrix``), ``matrices+head``,
    ``rest`` (``head`` and ``vector``), ``vectors`` (``vector``)."""
    table = {
        "all": frozenset(LABELS),
        "matrices": frozenset({"matrix"}),
        "matrices+head": frozenset({"matrix", "head"}),
        "rest": frozenset({"head", "vector"}),
        "vectors": frozenset({"vector"}),
    }
    if selection not in table:
        raise ValueError(f"unknown parameter selection {selection!r} (known: {', '.join(table)})")
    return table[selection]
