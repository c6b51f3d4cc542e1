"""Composite layers: named children applied in order (sequential, residual, LoRA, attention,
transformer blocks, text and vision encoders)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from suites.layers.base import Layer, ParamSpec, Shape, normal_init
from suites.layers.parameter_free import ACTIVATIONS
from suites.layers.tapped import Conv2d, Linear
from suites.layers.untapped import Embedding, LayerNorm


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
