"""Where each parameter lives in the flat vector: the canonical layout both backends share.

The flat vector of trainable parameters concatenates the parameters of
``ModelSpec.param_specs()`` that are trainable, in that order, each raveled in PyTorch's
layout (C order). :class:`ParamLayout` records offsets, and groups the parameters of tapped
layers (``Linear``, ``Conv2d``) into :class:`TappedLayer` blocks: the unit of K-FAC's
Kronecker factors, FNGD's per-layer coefficients and the Gram trick.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from suites.layers import Layer, ModelSpec


@dataclass(frozen=True)
class ParamBlock:
    """One trainable parameter: ``flat[offset:offset + size].reshape(shape)``."""

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
    record inputs and pre-activation gradients in this order.
    """

    tap_index: int
    layer_index: int
    layer: Layer
    weight: ParamBlock
    bias: ParamBlock | None

    @property
    def kind(self) -> str:
        return self.layer.kind

    @property
    def size(self) -> int:
        return self.weight.size + (self.bias.size if self.bias is not None else 0)


@dataclass(frozen=True)
class ParamLayout:
    spec: ModelSpec

    @cached_property
    def blocks(self) -> tuple[ParamBlock, ...]:
        out, offset = [], 0
        for layer_index, p in self.spec.param_specs():
            if p.trainable:
                out.append(ParamBlock(f"{layer_index}.{p.name}", layer_index, p.name, tuple(p.shape), offset, p.size))
                offset += p.size
        return tuple(out)

    @property
    def size(self) -> int:
        return self.blocks[-1].stop if self.blocks else 0

    @cached_property
    def tapped(self) -> tuple[TappedLayer, ...]:
        """Trainable tapped layers in spec order."""
        by_layer: dict[int, dict[str, ParamBlock]] = {}
        for b in self.blocks:
            by_layer.setdefault(b.layer_index, {})[b.role] = b
        out: list[TappedLayer] = []
        for i, layer in enumerate(self.spec.layers):
            if layer.tapped and "weight" in by_layer.get(i, {}):
                blocks = by_layer[i]
                out.append(TappedLayer(len(out), i, layer, blocks["weight"], blocks.get("bias")))
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
