"""Leaves with parameters the taps do not record: normalisation, embeddings, the Rosenbrock
point."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from suites.layers.base import Layer, ParamSpec, Shape, constant_init, normal_init


@dataclass(frozen=True)
class LayerNorm(Layer):
    """Normalisation over the last axis, ``(x - mean) / sqrt(var + eps) * weight + bias``
    (biased variance; ``nn.LayerNorm``). Weight ones, bias zeros."""

    dim: int
    eps: float = 1e-5
    trainable: bool = True
    kind: ClassVar[str] = "layer_norm"

    def params(self) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("weight", (self.dim,), constant_init(1.0), self.trainable),
            ParamSpec("bias", (self.dim,), constant_init(0.0), self.trainable),
        )

    def output_shape(self, input_shape: Shape) -> Shape:
        if input_shape[-1] != self.dim:
            raise ValueError(f"LayerNorm expects last axis {self.dim}, got shape {input_shape}")
        return input_shape


@dataclass(frozen=True)
class GroupNorm(Layer):
    """Per-sample normalisation of channel groups of ``(C, ...)`` inputs (``nn.GroupNorm``;
    Wu & He 2018). Weight ones, bias zeros.

    The BatchNorm replacement of this benchmark: BatchNorm mixes the samples of a batch, so
    per-sample gradients (EF, iEF, FNGD, the Gram) are not those of a sum of per-sample losses;
    GroupNorm normalises each sample on its own. Opacus makes the same substitution for
    per-sample-gradient training (``ModuleValidator.fix`` replaces ``BatchNorm`` by
    ``GroupNorm(min(32, C), C)``).
    """

    num_groups: int
    num_channels: int
    eps: float = 1e-5
    trainable: bool = True
    kind: ClassVar[str] = "group_norm"

    def __post_init__(self) -> None:
        if self.num_channels % self.num_groups:
            raise ValueError(f"GroupNorm: {self.num_channels} channels do not split into {self.num_groups} groups")

    def params(self) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("weight", (self.num_channels,), constant_init(1.0), self.trainable),
            ParamSpec("bias", (self.num_channels,), constant_init(0.0), self.trainable),
        )

    def output_shape(self, input_shape: Shape) -> Shape:
        if input_shape[0] != self.num_channels:
            raise ValueError(f"GroupNorm expects {self.num_channels} channels, got shape {input_shape}")
        return input_shape


@dataclass(frozen=True)
class Embedding(Layer):
    """Row lookup ``weight[ids]`` of integer ids ``(...)`` -> ``(..., dim)`` (``nn.Embedding``,
    initialised ``N(0, 1)`` as there)."""

    num_embeddings: int
    embedding_dim: int
    trainable: bool = True
    kind: ClassVar[str] = "embedding"

    def params(self) -> tuple[ParamSpec, ...]:
        shape = (self.num_embeddings, self.embedding_dim)
        return (ParamSpec("weight", shape, normal_init(1.0), self.trainable),)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape, self.embedding_dim)


@dataclass(frozen=True)
class Rosenbrock(Layer):
    """The Rosenbrock function as a residual map: parameters ``theta = (x, y)``, output
    ``r = [a - x, sqrt(b) (y - x^2)]`` for every sample (the input only sets the batch size).

    With the ``mse`` likelihood and zero targets the loss is ``0.5 ||r||^2 = f(x, y) / 2``,
    ``f`` Rosenbrock's function (AdamQLR's least-squares form; see ``suites/rosenbrock.py``).
    """

    a: float = 1.0
    b: float = 100.0
    start: tuple[float, float] = (1.0, -1.0)
    kind: ClassVar[str] = "rosenbrock"

    def params(self) -> tuple[ParamSpec, ...]:
        start = np.asarray(self.start, dtype=np.float64)
        return (ParamSpec("theta", (2,), lambda rng, shape: start.copy()),)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (2,)
