"""The model-spec vocabulary shared by every backend.

A :class:`ModelSpec` is an input shape and a sequence of layers; a layer may be a *composite*
holding named child layers (:class:`Sequential`, :class:`Residual`, :class:`LoRALinear`, the
transformer pieces), so a spec is a tree. Each layer states its own parameters
(:class:`ParamSpec`: name, shape in PyTorch's layout, initialiser, trainable flag), its children
and its output shape; each backend implements every layer kind once (``backends/<b>/models``).
Initial parameters are drawn here, in numpy, from the spec and the run seed (or read from the
spec's pretrained arrays), so every backend starts from the same numbers.

Names and canonical order
-------------------------
A parameter's name is its path: the top-level layer index, the child names down the tree, the
parameter name (``"3.body.0.weight"``, ``"0.layers.1.attention.query.lora_A.weight"``). The
canonical order is a depth-first walk: a layer's own parameters (in ``params()`` order: weight
before bias), then its children in ``children()`` order. This is the order of
``named_parameters()`` of the ``nn.Module`` the torch backend builds, whose module names are
these paths. The flat parameter vector holds the trainable parameters in this order; frozen
parameters (``trainable=False``) are not part of it.

Taps
----
Layers whose parameters enter as ``s = W a (+ b)`` are *tapped* (``Linear``, ``Conv2d``): the
backends record their inputs ``a`` and the gradients ``e = dl/ds`` of their pre-activations,
the raw material of K-FAC, FNGD and the sample-space Gram trick. Taps are recorded in the order
the tapped layers execute; every composite runs its tapped children in ``children()`` order, so
that order is the depth-first layout order (the backends assert it). A Linear applied to a
sequence ``(T, d)`` (inside a transformer) has taps with a sequence axis, ``(B, T, d)``.

Inputs
------
Inputs are float arrays, except for token models (first layer :class:`TextEncoder` or
:class:`Embedding`), whose inputs are integer token ids ``(B, T)`` that the backends keep
integer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

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


# --------------------------------------------------------------------------- tapped leaves


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


# --------------------------------------------------------------------------- parameter-free leaves

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


# --------------------------------------------------------------------------- normalisation, embeddings


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


# --------------------------------------------------------------------------- composites


@dataclass(frozen=True)
class Sequential(Layer):
    """Children ``"0"``, ``"1"``, ... applied in order (``nn.Sequential``); keyword context
    (an attention mask) is passed on to every child."""

    layers: tuple[Layer, ...]
    kind: ClassVar[str] = "sequential"

    def children(self) -> tuple[tuple[str, Layer], ...]:
        return tuple((str(i), layer) for i, layer in enumerate(self.layers))

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        shapes = [tuple(input_shape)]
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
        return shapes[-1], tuple(shapes[:-1])


@dataclass(frozen=True)
class Residual(Layer):
    """``body(x) + shortcut(x)`` (identity shortcut when ``shortcut`` is ``None``): the ResNet
    basic block without its final activation. Children ``body`` then ``shortcut``."""

    body: Layer
    shortcut: Layer | None = None
    kind: ClassVar[str] = "residual"

    def children(self) -> tuple[tuple[str, Layer], ...]:
        out: tuple[tuple[str, Layer], ...] = (("body", self.body),)
        return out + ((("shortcut", self.shortcut),) if self.shortcut is not None else ())

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        out = self.body.output_shape(input_shape)
        skip = self.shortcut.output_shape(input_shape) if self.shortcut is not None else tuple(input_shape)
        if out != skip:
            raise ValueError(f"Residual: body gives {out}, shortcut gives {skip}")
        return out, (tuple(input_shape),) * len(self.children())


@dataclass(frozen=True)
class LoRALinear(Layer):
    """A frozen Linear plus a trainable low-rank update (Hu et al. 2021, LoRA, eq. 3)::

        s = a W0^T + b0 + (alpha / r) * (a A^T) B^T,     A: (r, in),  B: (out, r)

    Children ``base`` (frozen, pretrained), ``lora_A`` and ``lora_B`` (tapped Linear layers
    without bias). ``A`` starts as PyTorch's Linear default ``U(+-1/sqrt(in))`` (equal to peft's
    ``kaiming_uniform_(a=sqrt(5))``), ``B`` as zeros, so the initial model is the pretrained
    one. No LoRA dropout (deterministic problems).
    """

    in_features: int
    out_features: int
    rank: int = 8
    alpha: float = 8.0
    bias: bool = True
    kind: ClassVar[str] = "lora_linear"

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def children(self) -> tuple[tuple[str, Layer], ...]:
        return (
            ("base", Linear(self.in_features, self.out_features, bias=self.bias, trainable=False)),
            ("lora_A", Linear(self.in_features, self.rank, bias=False)),
            ("lora_B", Linear(self.rank, self.out_features, bias=False, zero_init=True)),
        )

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        out = Linear(self.in_features, self.out_features).output_shape(input_shape)
        rank_shape = (*input_shape[:-1], self.rank)
        return out, (tuple(input_shape), tuple(input_shape), rank_shape)


@dataclass(frozen=True)
class SelfAttention(Layer):
    """Multi-head scaled dot-product self-attention over ``(T, dim)`` (Vaswani et al. 2017)::

        Q, K, V = query(h), key(h), value(h);  heads: split dim into num_heads x d_h
        A = softmax(Q K^T / sqrt(d_h), masked keys -> -inf) V;   out = output(A)

    Children ``query``, ``key``, ``value``, ``output`` (Linear or LoRALinear). The context
    ``mask`` (``(B, T)`` booleans, True for real tokens) removes padded keys.
    """

    dim: int
    num_heads: int
    query: Layer
    key: Layer
    value: Layer
    output: Layer
    kind: ClassVar[str] = "self_attention"

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"attention dim {self.dim} is not divisible by {self.num_heads} heads")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def children(self) -> tuple[tuple[str, Layer], ...]:
        return (("query", self.query), ("key", self.key), ("value", self.value), ("output", self.output))

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        for _, child in self.children():
            if child.output_shape(input_shape) != tuple(input_shape):
                raise ValueError("attention projections must map dim to dim")
        return tuple(input_shape), (tuple(input_shape),) * 4


@dataclass(frozen=True)
class TransformerBlock(Layer):
    """One transformer encoder block over ``(T, dim)``.

    Post-LN (BERT, MiniLM; ``norm_first=False``)::

        h = norm1(h + attention(h));   h = norm2(h + fc2(act(fc1(h))))

    Pre-LN (ViT; ``norm_first=True``)::

        h = h + attention(norm1(h));   h = h + fc2(act(fc1(norm2(h))))

    Children ``attention``, ``norm1``, ``fc1``, ``fc2``, ``norm2`` (the tapped ones,
    ``attention``'s projections, ``fc1``, ``fc2``, run in this order either way). No dropout.
    """

    attention: SelfAttention
    norm1: LayerNorm
    fc1: Layer
    fc2: Layer
    norm2: LayerNorm
    activation: str = "gelu_erf"
    norm_first: bool = False
    kind: ClassVar[str] = "transformer_block"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}")

    def children(self) -> tuple[tuple[str, Layer], ...]:
        return (
            ("attention", self.attention),
            ("norm1", self.norm1),
            ("fc1", self.fc1),
            ("fc2", self.fc2),
            ("norm2", self.norm2),
        )

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        h = tuple(input_shape)
        hidden = self.fc1.output_shape(h)
        if self.fc2.output_shape(hidden) != h:
            raise ValueError("transformer block: fc2(fc1(h)) must have the shape of h")
        return h, (h, h, h, hidden, h)


@dataclass(frozen=True)
class TokenEmbeddings(Layer):
    """BERT's input embeddings of token ids ``(T,)`` -> ``(T, dim)``::

        norm(word[ids] + position[0..T-1] + token_type[0])

    (single-segment inputs: token type 0). Children ``word``, ``position``, ``token_type``
    (Embedding) and ``norm`` (LayerNorm).
    """

    vocab_size: int
    max_positions: int
    type_vocab_size: int
    dim: int
    eps: float = 1e-12
    trainable: bool = False
    kind: ClassVar[str] = "token_embeddings"

    def children(self) -> tuple[tuple[str, Layer], ...]:
        t = self.trainable
        return (
            ("word", Embedding(self.vocab_size, self.dim, trainable=t)),
            ("position", Embedding(self.max_positions, self.dim, trainable=t)),
            ("token_type", Embedding(self.type_vocab_size, self.dim, trainable=t)),
            ("norm", LayerNorm(self.dim, self.eps, trainable=t)),
        )

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        (length,) = input_shape
        if length > self.max_positions:
            raise ValueError(f"sequence length {length} exceeds {self.max_positions} positions")
        out = (length, self.dim)
        return out, ((length,), (length,), (length,), out)


@dataclass(frozen=True)
class TextEncoder(Layer):
    """A BERT-style encoder of padded token ids ``(T,)`` to one vector ``(dim,)``.

    ``mask = ids != pad_id``; ``h = embeddings(ids)``; ``h = blocks(h, mask=mask)``; the output
    is the mean of ``h`` over the real (non-pad) tokens, sentence-transformers' pooling of
    all-MiniLM-L6-v2. Children ``embeddings`` and ``blocks`` (a Sequential of
    TransformerBlocks).
    """

    embeddings: TokenEmbeddings
    blocks: Sequential
    pad_id: int = 0
    kind: ClassVar[str] = "text_encoder"

    def children(self) -> tuple[tuple[str, Layer], ...]:
        return (("embeddings", self.embeddings), ("blocks", self.blocks))

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        h = self.embeddings.output_shape(input_shape)
        out = self.blocks.output_shape(h)
        return (out[-1],), (tuple(input_shape), h)


@dataclass(frozen=True)
class PatchEmbeddings(Layer):
    """ViT's input embeddings of images ``(C, H, W)`` -> ``(N + 1, dim)`` (Dosovitskiy et al.
    2021, eq. 1): non-overlapping ``patch x patch`` patches through the ``projection`` Conv2d,
    a learned class token prepended, learned position embeddings added.

    Own parameters ``cls_token`` ``(1, 1, dim)`` and ``position_embeddings`` ``(1, N + 1, dim)``
    (HF ViT layout), then the child ``projection``.
    """

    image_size: int
    patch_size: int
    channels: int
    dim: int
    trainable: bool = False
    kind: ClassVar[str] = "patch_embeddings"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def params(self) -> tuple[ParamSpec, ...]:
        t = self.trainable
        return (
            ParamSpec("cls_token", (1, 1, self.dim), normal_init(0.02), t),
            ParamSpec("position_embeddings", (1, self.num_patches + 1, self.dim), normal_init(0.02), t),
        )

    def children(self) -> tuple[tuple[str, Layer], ...]:
        conv = Conv2d(self.channels, self.dim, self.patch_size, stride=self.patch_size, trainable=self.trainable)
        return (("projection", conv),)

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        if tuple(input_shape) != (self.channels, self.image_size, self.image_size):
            raise ValueError(f"patch embeddings expect {(self.channels, self.image_size, self.image_size)}")
        return (self.num_patches + 1, self.dim), (tuple(input_shape),)


@dataclass(frozen=True)
class VisionEncoder(Layer):
    """A ViT encoder of images ``(C, H, W)`` to the final-normed class token ``(dim,)``:
    ``norm(blocks(embeddings(x)))[0]`` (HF ``ViTForImageClassification``'s input to the head).
    Children ``embeddings``, ``blocks``, ``norm``."""

    embeddings: PatchEmbeddings
    blocks: Sequential
    norm: LayerNorm
    kind: ClassVar[str] = "vision_encoder"

    def children(self) -> tuple[tuple[str, Layer], ...]:
        return (("embeddings", self.embeddings), ("blocks", self.blocks), ("norm", self.norm))

    def trace(self, input_shape: Shape) -> tuple[Shape, tuple[Shape, ...]]:
        h = self.embeddings.output_shape(input_shape)
        h2 = self.blocks.output_shape(h)
        return (h2[-1],), (tuple(input_shape), h, h2)


# --------------------------------------------------------------------------- the tree


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
        from suites.spec import STREAM_INIT, seed_sequence

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
