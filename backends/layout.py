"""Where each parameter lives in the flat vector: the canonical layout both backends share.

The flat vector of trainable parameters concatenates the trainable parameters of
``ModelSpec.param_entries()`` in that order (a depth-first walk of the layer tree: a layer's own
parameters, then its children), each raveled in PyTorch's layout (C order). This is the order
of the trainable ``named_parameters()`` of the torch module. :class:`ParamLayout` records
offsets, and groups the parameters of tapped layers (``Linear``, ``Conv2d``, also inside
composites such as LoRA adapters) into :class:`TappedLayer` blocks: the unit of K-FAC's
Kronecker factors, FNGD's per-layer coefficients and the Gram trick. Tapped layers are listed
in the same depth-first order, which is the order they execute in (the backends record taps in
execution order and check that it matches).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from backends import layer_kinds
from suites.layers import Layer, ModelSpec


@dataclass(frozen=True)
class ParamBlock:
    """One trainable parameter: ``flat[offset:offset + size].reshape(shape)``.

    ``name`` is the full path (``"3.body.0.weight"``), ``layer_index`` the top-level layer,
    ``role`` the path below it (``"weight"`` for a top-level layer, ``"body.0.weight"``).
    """

    name: str
    layer_index: int
    role: str
    shape: tuple[int, ...]
    offset: int
    size: int

    @property
    def stop(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class TappedLayer:
    """A tapped layer with trainable parameters and where its weight and bias sit.

    ``tap_index`` is the position of the layer among the trainable tapped layers; backends
    record inputs and pre-activation gradients in this order. ``layer_index`` is the top-level
    layer that is or contains it, ``path`` the layer's own path (``"2"``, ``"0.blocks.1.attention
    .query.lora_A"``), ``input_shape`` its per-sample input shape: ``(d_in,)`` for a Linear on
    vectors, ``(T, d_in)`` for a Linear applied at ``T`` positions (taps ``(B, T, d)``),
    ``(C, H, W)`` for a Conv2d.
    """

    tap_index: int
    layer_index: int
    layer: Layer
    weight: ParamBlock
    bias: ParamBlock | None
    path: str = ""
    input_shape: tuple[int, ...] = ()

    @property
    def kind(self) -> str:
        return self.layer.kind

    @property
    def size(self) -> int:
        return self.weight.size + (self.bias.size if self.bias is not None else 0)

    @cached_property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample pre-activation shape (the tap ``e`` without the batch axis)."""
        return tuple(self.layer.output_shape(self.input_shape))

    @cached_property
    def positions(self) -> int:
        """Locations the layer is applied at: 1 for vectors, ``T`` for sequences, ``H W`` for convs."""
        return layer_kinds.rule(self.layer).positions(self.output_shape)


@dataclass(frozen=True)
class ParamLayout:
    spec: ModelSpec

    @cached_property
    def blocks(self) -> tuple[ParamBlock, ...]:
        out, offset = [], 0
        for e in self.spec.param_entries():
            if e.spec.trainable:
                _, _, role = e.path.partition(".")
                out.append(ParamBlock(e.path, e.layer_index, role, tuple(e.spec.shape), offset, e.spec.size))
                offset += e.spec.size
        return tuple(out)

    @property
    def size(self) -> int:
        return self.blocks[-1].stop if self.blocks else 0

    @cached_property
    def by_name(self) -> dict[str, ParamBlock]:
        return {b.name: b for b in self.blocks}

    @cached_property
    def tapped(self) -> tuple[TappedLayer, ...]:
        """Trainable tapped layers, depth-first (= execution) order."""
        out: list[TappedLayer] = []
        for node in self.spec.walk():
            if not node.layer.tapped:
                continue
            weight = self.by_name.get(f"{node.path}.weight")
            if weight is None:
                continue
            bias = self.by_name.get(f"{node.path}.bias")
            out.append(TappedLayer(len(out), node.layer_index, node.layer, weight, bias, node.path, node.input_shape))
        return tuple(out)

    @cached_property
    def untapped(self) -> tuple[ParamBlock, ...]:
        """Trainable parameters outside tapped layers (e.g. norm scales)."""
        covered = {id(b) for t in self.tapped for b in (t.weight, t.bias) if b is not None}
        return tuple(b for b in self.blocks if id(b) not in covered)

    @property
    def all_tapped(self) -> bool:
        """Every trainable parameter belongs to a tapped layer."""
        return not self.untapped
