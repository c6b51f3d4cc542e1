"""The base of the vocabulary: :class:`Layer`, :class:`ParamSpec` and the initialisers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

Shape = tuple[int, ...]
Initializer = Callable[[np.random.Generator, Shape], np.ndarray]


def uniform_init(bound: float) -> Initializer:
    """U(-bound, bound), PyTorch's default for Linear/Conv weights and biases."""

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        return rng.uniform(-bound, bound, size=shape)

    return draw


def normal_init(std: float) -> Initializer:
    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        return rng.normal(0.0, std, size=shape)

    return draw


def constant_init(value: float) -> Initializer:
    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    return draw


def array_init(array: np.ndarray) -> Initializer:
    """Pretrained values; the generator is not consumed."""

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"pretrained array has shape {array.shape}, expected {shape}")
        return np.asarray(array, dtype=np.float64)

    return draw


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: Shape
    init: Initializer = field(compare=False, repr=False)
    trainable: bool = True

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class Layer:
    """Base of the vocabulary. Subclasses are frozen dataclasses.

    Leaves implement :meth:`params` and :meth:`output_shape`. Composites implement
    :meth:`children` and :meth:`trace` (the input shape of every child and the output shape);
    they own no parameters unless they say so in :meth:`params`.
    """

    #: Name backends dispatch on.
    kind: ClassVar[str] = "layer"
    #: Whether the layer is ``s = W a (+ b)`` and recorded by the taps.
    tapped: ClassVar[bool] = False

    def params(self) -> tuple[ParamSpec, ...]:
        return ()

    def children(self) -> tuple[tuple[str, Layer], ...]:
        """Named child layers, in canonical (and execution) order; empty for leaves."""
        return ()

    @property
    def composite(self) -> bool:
        return bool(self.children())

    def output_shape(self, input_shape: Shape) -> Shape:
        return self.trace(input_shape)[0] if self.composite else input_shape

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        """``(output shape, input shape of every child)`` for a per-sample ``input_shape``."""
        if self.composite:
            raise NotImplementedError(f"composite layer {self.kind!r} must implement trace()")
        return self.output_shape(input_shape), ()
