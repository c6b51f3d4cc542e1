"""One rule per tapped layer kind: how its raw taps become per-position rows.

A tapped layer computes ``s = W a (+ b)`` at ``T`` positions per sample (1 for a Linear on
vectors, ``T`` for a Linear on sequences, ``H' W'`` for a Conv2d). The backends record its raw
taps (the layer input ``a`` and the pre-activation cotangent ``e``, in the layer's own layout);
everything the curvature methods build from them (the sample-space Gram and ``J^T w`` of
``backends.sample_space``, K-FAC's Kronecker factors) needs the same two views:

* :meth:`TapRule.inputs`: ``a`` as rows ``(B, d_in)`` or ``(B, T, d_in)`` whose features match
  the flattened weight's columns (a Conv2d's unfolded patches, channel-major ``(C_in, kh, kw)``);
* :meth:`TapRule.outputs`: ``e`` as ``(N, d_out)`` or ``(N, T, d_out)`` with the same positions.

With those, the per-sample gradient of the layer is ``sum_t e_nt a_nt^T`` (weight, C order
``(d_out, d_in)``) and ``sum_t e_nt`` (bias) for every kind, which is all the shared maths
assumes. Adding a tapped kind is one :func:`register` call here (and the layer's taps in each
backend's model builder); :func:`rule` fails loudly for a kind without one.

Framework-neutral: the array operations come from a :class:`backends.array_ops.ArrayOps`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from backends.array_ops import Array, ArrayOps
from suites.layers import Conv2d, Layer

if TYPE_CHECKING:
    from backends.layout import TappedLayer


class TapRule:
    """The dense (Linear) rule: inputs and cotangents are already rows, positions (if any) are
    every axis between the batch and the feature axis."""

    kind = "linear"

    def positions(self, output_shape: tuple[int, ...]) -> int:
        """``T`` for a per-sample pre-activation shape (the tap ``e`` without the batch axis)."""
        return int(max(1, math.prod(output_shape[:-1])))

    def inputs(self, ops: ArrayOps, layer: TappedLayer, a: Array) -> Array:
        """``a`` as ``(B, d_in)`` (no positions) or ``(B, T, d_in)``."""
        return a if a.ndim == 2 else a.reshape(a.shape[0], -1, a.shape[-1])

    def outputs(self, ops: ArrayOps, layer: TappedLayer, e: Array) -> Array:
        """``e`` as ``(N, d_out)`` (no positions) or ``(N, T, d_out)``."""
        return e if e.ndim == 2 else e.reshape(e.shape[0], -1, e.shape[-1])


class Conv2dRule(TapRule):
    """A Conv2d: NCHW inputs unfolded into patches, NCHW cotangents moved to channels-last."""

    kind = "conv2d"

    def positions(self, output_shape: tuple[int, ...]) -> int:
        return int(output_shape[1] * output_shape[2])

    def inputs(self, ops: ArrayOps, layer: TappedLayer, a: Array) -> Array:
        spec = layer.layer
        assert isinstance(spec, Conv2d)
        return ops.conv_patches(a, spec.kernel_size, spec.stride, spec.padding)

    def outputs(self, ops: ArrayOps, layer: TappedLayer, e: Array) -> Array:
        return ops.swap_last(e.reshape(e.shape[0], e.shape[1], -1))


_RULES: dict[str, TapRule] = {}


def register(rule: TapRule) -> TapRule:
    """Make ``rule`` the rule of the tapped layer kind ``rule.kind`` (one registration per kind)."""
    if rule.kind in _RULES:
        raise ValueError(f"tapped layer kind {rule.kind!r} already has a rule")
    _RULES[rule.kind] = rule
    return rule


register(TapRule())
register(Conv2dRule())


def tapped_kinds() -> frozenset[str]:
    """The layer kinds with a tap rule (those the tap-based maths can rebuild gradients for)."""
    return frozenset(_RULES)


def rule(layer: Layer | TappedLayer) -> TapRule:
    """The rule of ``layer``'s kind; a kind without one is an error naming the known kinds."""
    kind = layer.kind
    try:
        return _RULES[kind]
    except KeyError:
        raise NotImplementedError(
            f"no tap rule for layer kind {kind!r} (known: {sorted(_RULES)}); register one in backends.layer_kinds"
        ) from None
