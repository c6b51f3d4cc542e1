"""The model spec: an input shape and a tree of layers, walked in canonical order, with its
parameters drawn from the run seed (see :mod:`suites.layers` for names and order)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from suites.layers.base import Layer, ParamSpec, Shape
from suites.streams import STREAM_INIT, seed_sequence


@dataclass(frozen=True)
class LayerNode:
    """One layer of a spec's tree, as :meth:`ModelSpec.walk` visits it."""

    path: str
    layer_index: int
    layer: Layer
    input_shape: Shape
    parent: str | None

    @property
    def relative_path(self) -> str:
        """The path below the top-level layer (``""`` for a top-level layer)."""
        _, _, rest = self.path.partition(".")
        return rest

    @property
    def output_shape(self) -> Shape:
        return self.layer.output_shape(self.input_shape)


@dataclass(frozen=True)
class ParamEntry:
    """One parameter with its full path name (``"<layer>.<child>...<name>"``)."""

    path: str
    layer_index: int
    node: str
    spec: ParamSpec

    @property
    def local_name(self) -> str:
        return self.spec.name


PretrainedLoader = Callable[[], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class ModelSpec:
    """An input shape (per sample, without the batch axis) and a sequence of layers.

    ``pretrained`` (optional) returns arrays by full parameter path; those parameters take
    these values instead of a random draw (and consume no randomness). It is called when
    parameters are initialised, never when a spec is merely inspected.
    """

    input_shape: Shape
    layers: tuple[Layer, ...]
    pretrained: PretrainedLoader | None = field(default=None, compare=False, repr=False)

    @property
    def shapes(self) -> list[Shape]:
        """Input shape of every top-level layer, then the output shape."""
        out = [tuple(self.input_shape)]
        for layer in self.layers:
            out.append(layer.output_shape(out[-1]))
        return out

    @property
    def output_shape(self) -> Shape:
        return self.shapes[-1]

    def walk(self) -> Iterator[LayerNode]:
        """Every layer depth-first (a parent before its children), with its input shape."""
        shapes = self.shapes

        def visit(path: str, index: int, layer: Layer, shape: Shape, parent: str | None) -> Iterator[LayerNode]:
            yield LayerNode(path, index, layer, tuple(shape), parent)
            children = layer.children()
            if children:
                _, child_shapes = layer.trace(shape)
                for (name, child), child_shape in zip(children, child_shapes, strict=True):
                    yield from visit(f"{path}.{name}", index, child, child_shape, path)

        for i, layer in enumerate(self.layers):
            yield from visit(str(i), i, layer, shapes[i], None)

    def param_entries(self) -> list[ParamEntry]:
        """Every parameter (trainable or frozen) in canonical order, with its full path."""
        return [
            ParamEntry(f"{node.path}.{p.name}", node.layer_index, node.path, p)
            for node in self.walk()
            for p in node.layer.params()
        ]

    def param_specs(self) -> list[tuple[int, ParamSpec]]:
        """``(top-level layer index, ParamSpec)`` for every parameter, trainable or not, in
        canonical order; the ParamSpec's name is the path below the top-level layer
        (``"weight"``, or ``"body.0.weight"`` inside a composite)."""
        out = []
        for e in self.param_entries():
            _, _, rel = e.path.partition(".")
            out.append((e.layer_index, e.spec if rel == e.spec.name else dataclasses.replace(e.spec, name=rel)))
        return out

    def param_names(self, trainable_only: bool = True) -> list[str]:
        return [e.path for e in self.param_entries() if e.spec.trainable or not trainable_only]

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(e.spec.size for e in self.param_entries() if e.spec.trainable or not trainable_only)

    def init_params(self, seed: int) -> list[np.ndarray]:
        """All parameters (trainable and frozen) in canonical order, float64, from one stream.

        Pretrained parameters are copied (converted to float64); every other parameter is drawn
        from the ``(seed, STREAM_INIT)`` stream in canonical order.
        """
        rng = seed_sequence(seed, STREAM_INIT)
        entries = self.param_entries()
        pretrained = dict(self.pretrained()) if self.pretrained is not None else {}
        unknown = set(pretrained) - {e.path for e in entries}
        if unknown:
            raise ValueError(f"pretrained arrays for unknown parameters: {', '.join(sorted(unknown)[:5])}")
        out = []
        for e in entries:
            if e.path in pretrained:
                value = np.asarray(pretrained[e.path], dtype=np.float64)
                if value.shape != tuple(e.spec.shape):
                    raise ValueError(f"pretrained {e.path} has shape {value.shape}, expected {e.spec.shape}")
                out.append(value)
            else:
                out.append(np.asarray(e.spec.init(rng, e.spec.shape), dtype=np.float64))
        return out

    def init_flat(self, seed: int) -> np.ndarray:
        """The trainable initial parameters as one flat float64 vector (canonical order)."""
        arrays = self.init_params(seed)
        parts = [a.ravel() for a, e in zip(arrays, self.param_entries(), strict=True) if e.spec.trainable]
        return np.concatenate(parts) if parts else np.zeros(0)
