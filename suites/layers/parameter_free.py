"""Parameter-free leaves: activations, reshaping, pooling and resizing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from suites.layers.base import Layer, Shape

ACTIVATIONS: tuple[str, ...] = ("relu", "tanh", "gelu", "gelu_erf", "sigmoid")


@dataclass(frozen=True)
class Activation(Layer):
    """Elementwise nonlinearity: ``relu``, ``tanh``, ``sigmoid``, ``gelu`` (tanh approximation,
    ``nn.GELU(approximate="tanh")``) or ``gelu_erf`` (exact ``x Phi(x)``, ``nn.GELU()``; BERT,
    MiniLM and ViT use this one)."""

    function: str
    kind: ClassVar[str] = "activation"

    def __post_init__(self) -> None:
        if self.function not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.function!r} (known: {', '.join(ACTIVATIONS)})")


def ReLU() -> Activation:
    return Activation("relu")


def Tanh() -> Activation:
    return Activation("tanh")


def GELU(approximate: Literal["tanh", "none"] = "tanh") -> Activation:
    """GELU; ``approximate="none"`` is the exact erf form (``gelu_erf``)."""
    return Activation("gelu" if approximate == "tanh" else "gelu_erf")


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
class Pool2d(Layer):
    """Max or average pooling over ``(C, H, W)`` (``nn.MaxPool2d`` / ``nn.AvgPool2d``; average
    pooling counts padded zeros, PyTorch's ``count_include_pad=True``)."""

    mode: Literal["max", "avg"]
    kernel_size: int
    stride: int | None = None
    padding: int = 0
    kind: ClassVar[str] = "pool2d"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "avg"):
            raise ValueError(f"unknown pooling mode {self.mode!r} (known: max, avg)")
        if 2 * self.padding > self.kernel_size:
            raise ValueError("pooling padding must be at most half the kernel size")

    @property
    def step(self) -> int:
        return self.kernel_size if self.stride is None else self.stride

    def output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = input_shape
        k, s, p = self.kernel_size, self.step, self.padding
        return (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)


def MaxPool2d(kernel_size: int, stride: int | None = None, padding: int = 0) -> Pool2d:
    return Pool2d("max", kernel_size, stride, padding)


def AvgPool2d(kernel_size: int, stride: int | None = None, padding: int = 0) -> Pool2d:
    return Pool2d("avg", kernel_size, stride, padding)


@dataclass(frozen=True)
class GlobalAvgPool2d(Layer):
    """Mean over the spatial axes: ``(C, H, W) -> (C,)``."""

    kind: ClassVar[str] = "global_avg_pool2d"

    def output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[0],)


@dataclass(frozen=True)
class Resize(Layer):
    """Bilinear upsampling of ``(C, H, W)`` images to ``(C, size, size)``.

    PyTorch's ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``
    (half-pixel centres, edges clamped), written as ``X -> R_h X R_w^T`` with the fixed
    interpolation matrices of :meth:`matrix`, so both backends compute the same products.
    Used to bring 32x32 CIFAR images to a pretrained ViT's 224x224 input, as the iEF paper's
    HF image processor does.
    """

    size: int
    kind: ClassVar[str] = "resize"

    def output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = input_shape
        if h > self.size or w > self.size:
            raise ValueError("Resize only upsamples (downsampling would need antialiasing)")
        return (c, self.size, self.size)

    def matrix(self, n_in: int) -> np.ndarray:
        """``(size, n_in)`` interpolation matrix of one axis."""
        scale = n_in / self.size
        src = np.maximum((np.arange(self.size) + 0.5) * scale - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = src - lo
        out = np.zeros((self.size, n_in))
        rows = np.arange(self.size)
        np.add.at(out, (rows, lo), 1.0 - frac)
        np.add.at(out, (rows, hi), frac)
        return out
