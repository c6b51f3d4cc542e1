"""The model-spec vocabulary shared by every backend.

A :class:`ModelSpec` is an input shape and a sequence of layers. Each layer states its
parameters (:class:`ParamSpec`: name, shape in PyTorch's layout, initialiser, trainable flag)
and its output shape; each backend implements every layer type once (``backends/<b>/models``).
Initial parameters are drawn here, in numpy, from the spec and the run seed, so every backend
starts from the same numbers.

Canonical parameter order: spec layer order, and within a layer the order of its
``params`` (weight before bias). This equals the order of ``named_parameters()`` of the torch
module the torch backend builds; frozen parameters (``trainable=False``) are not part of the
flat parameter vector.

Layers whose parameters enter as ``s = W a (+ b)`` are *tapped* (``Linear``, ``Conv2d``): the
backends record their inputs ``a`` and the gradients ``e = dl/ds`` of their pre-activations, the
raw material of K-FAC, FNGD and the sample-space Gram trick.
"""

from __future__ import annotations

import math
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
    """Base of the vocabulary. Subclasses are frozen dataclasses."""

    #: Name backends dispatch on.
    kind: ClassVar[str] = "layer"
    #: Whether the layer is ``s = W a (+ b)`` and recorded by the taps.
    tapped: ClassVar[bool] = False

    def params(self) -> tuple[ParamSpec, ...]:
        return ()

    def output_shape(self, input_shape: Shape) -> Shape:
        return input_shape


@dataclass(frozen=True)
class Linear(Layer):
    """``s = a W^T + b`` over the last axis; weight ``(out, in)``, bias ``(out,)``."""

    in_features: int
    out_features: int
    bias: bool = True
    trainable: bool = True
    kind: ClassVar[str] = "linear"
    tapped: ClassVar[bool] = True

    def params(self) -> tuple[ParamSpec, ...]:
        bound = 1.0 / math.sqrt(self.in_features)
        w = ParamSpec("weight", (self.out_features, self.in_features), uniform_init(bound), self.trainable)
        if not self.bias:
            return (w,)
        return (w, ParamSpec("bias", (self.out_features,), uniform_init(bound), self.trainable))

    def output_shape(self, input_shape: Shape) -> Shape:
        if input_shape[-1] != self.in_features:
            raise ValueError(f"Linear expects {self.in_features} input features, got shape {input_shape}")
        return (*input_shape[:-1], self.out_features)


@dataclass(frozen=True)
class Conv2d(Layer):
    """2-D convolution over ``(C, H, W)`` inputs; weight ``(out, in, kh, kw)``, bias ``(out,)``."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True
    trainable: bool = True
    kind: ClassVar[str] = "conv2d"
    tapped: ClassVar[bool] = True

    def params(self) -> tuple[ParamSpec, ...]:
        k = self.kernel_size
        bound = 1.0 / math.sqrt(self.in_channels * k * k)
        w = ParamSpec("weight", (self.out_channels, self.in_channels, k, k), uniform_init(bound), self.trainable)
        if not self.bias:
            return (w,)
        return (w, ParamSpec("bias", (self.out_channels,), uniform_init(bound), self.trainable))

    def output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = input_shape
        if c != self.in_channels:
            raise ValueError(f"Conv2d expects {self.in_channels} channels, got shape {input_shape}")
        k, s, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)


@dataclass(frozen=True)
class Activation(Layer):
    """Elementwise nonlinearity: ``relu``, ``tanh``, ``gelu`` (tanh approximation) or ``sigmoid``."""

    function: str
    kind: ClassVar[str] = "activation"

    def __post_init__(self) -> None:
        if self.function not in ("relu", "tanh", "gelu", "sigmoid"):
            raise ValueError(f"unknown activation {self.function!r}")


def ReLU() -> Activation:
    return Activation("relu")


def Tanh() -> Activation:
    return Activation("tanh")


def GELU() -> Activation:
    return Activation("gelu")


@dataclass(frozen=True)
class Flatten(Layer):
    """Flattens every axis after the batch axis."""

    kind: ClassVar[str] = "flatten"

    def output_shape(self, input_shape: Shape) -> Shape:
        return (int(np.prod(input_shape)),)


@dataclass(frozen=True)
class Reshape(Layer):
    """Reshapes each sample to ``shape`` (e.g. 64 pixels to ``(1, 8, 8)``)."""

    shape: Shape
    kind: ClassVar[str] = "reshape"

    def output_shape(self, input_shape: Shape) -> Shape:
        if int(np.prod(input_shape)) != int(np.prod(self.shape)):
            raise ValueError(f"cannot reshape {input_shape} to {self.shape}")
        return tuple(self.shape)


@dataclass(frozen=True)
class ModelSpec:
    """An input shape (per sample, without the batch axis) and a sequence of layers."""

    input_shape: Shape
    layers: tuple[Layer, ...]

    @property
    def shapes(self) -> list[Shape]:
        """Input shape of every layer, then the output shape."""
        out = [tuple(self.input_shape)]
        for layer in self.layers:
            out.append(layer.output_shape(out[-1]))
        return out

    @property
    def output_shape(self) -> Shape:
        return self.shapes[-1]

    def param_specs(self) -> list[tuple[int, ParamSpec]]:
        """``(layer index, ParamSpec)`` for every parameter, trainable or not, in canonical order."""
        return [(i, p) for i, layer in enumerate(self.layers) for p in layer.params()]

    def param_names(self, trainable_only: bool = True) -> list[str]:
        return [f"{i}.{p.name}" for i, p in self.param_specs() if p.trainable or not trainable_only]

    def num_params(self, trainable_only: bool = True) -> int:
        return sum(p.size for _, p in self.param_specs() if p.trainable or not trainable_only)

    def init_params(self, seed: int) -> list[np.ndarray]:
        """All parameters (trainable and frozen) in canonical order, float64, from one stream."""
        from suites.spec import STREAM_INIT, seed_sequence

        rng = seed_sequence(seed, STREAM_INIT)
        return [np.asarray(p.init(rng, p.shape), dtype=np.float64) for _, p in self.param_specs()]

    def init_flat(self, seed: int) -> np.ndarray:
        """The trainable initial parameters as one flat float64 vector (canonical order)."""
        arrays = self.init_params(seed)
        parts = [a.ravel() for a, (_, p) in zip(arrays, self.param_specs(), strict=True) if p.trainable]
        return np.concatenate(parts) if parts else np.zeros(0)
