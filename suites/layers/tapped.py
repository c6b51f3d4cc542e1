"""Tapped leaves: layers whose parameters enter as ``s = W a (+ b)`` (the backends record
the taps ``a`` and ``e = dl/ds``; see :mod:`suites.layers`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from suites.layers.base import Layer, ParamSpec, Shape, constant_init, uniform_init


@dataclass(frozen=True)
class Linear(Layer):
    """``s = a W^T + b`` over the last axis; weight ``(out, in)``, bias ``(out,)``.

    Initialisation: PyTorch's default ``U(-1/sqrt(in), 1/sqrt(in))`` for weight and bias, or
    zeros (``zero_init``, the LoRA ``B`` matrix).
    """

    in_features: int
    out_features: int
    bias: bool = True
    trainable: bool = True
    zero_init: bool = False
    kind: ClassVar[str] = "linear"
    tapped: ClassVar[bool] = True

    def params(self) -> tuple[ParamSpec, ...]:
        bound = 1.0 / math.sqrt(self.in_features)
        init = constant_init(0.0) if self.zero_init else uniform_init(bound)
        w = ParamSpec("weight", (self.out_features, self.in_features), init, self.trainable)
        if not self.bias:
            return (w,)
        return (w, ParamSpec("bias", (self.out_features,), init, self.trainable))

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
