"""Model specs of the catalogue's architectures, and the maps from pretrained checkpoints'
parameter names to the spec's paths. Numpy only.

* :func:`resnet18_cifar`: ResNet-18 for 32x32 images (He et al. 2016, the CIFAR variant used by
  AdamQLR and FNGD: 3x3 stem, no max-pool) with GroupNorm in place of BatchNorm.
* :func:`bert_encoder` / :func:`bert_weights`: a BERT-style text encoder (MiniLM) with LoRA on
  chosen attention projections, and the HF ``BertModel`` checkpoint names mapped onto it.
* :func:`vit_encoder` / :func:`vit_weights`: a ViT image encoder with LoRA, and the HF
  ``ViTModel`` / ``ViTForImageClassification`` checkpoint names mapped onto it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from suites.layers import (
    Conv2d,
    GlobalAvgPool2d,
    GroupNorm,
    Layer,
    LayerNorm,
    Linear,
    LoRALinear,
    PatchEmbeddings,
    ReLU,
    Residual,
    SelfAttention,
    Sequential,
    TextEncoder,
    TokenEmbeddings,
    TransformerBlock,
    VisionEncoder,
)

PROJECTIONS: tuple[str, ...] = ("query", "key", "value", "output")


# --------------------------------------------------------------------------- ResNet-18


def group_norm(channels: int) -> GroupNorm:
    """Opacus's BatchNorm replacement, ``GroupNorm(min(32, C), C)``."""
    return GroupNorm(min(32, channels), channels)


def basic_block(c_in: int, c_out: int, stride: int) -> Residual:
    """``conv3x3-GN-ReLU-conv3x3-GN`` plus the identity or a ``conv1x1-GN`` projection."""
    body = Sequential(
        (
            Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            group_norm(c_out),
            ReLU(),
            Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False),
            group_norm(c_out),
        )
    )
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = Sequential((Conv2d(c_in, c_out, 1, stride=stride, bias=False), group_norm(c_out)))
    return Residual(body, shortcut)


def resnet18_cifar(num_classes: int, channels: int = 3, width: int = 64) -> tuple[Layer, ...]:
    """Top-level layers of ResNet-18 for 32x32 inputs: stem, 4 stages of 2 basic blocks (each
    followed by a ReLU), global average pooling, Linear head."""
    layers: list[Layer] = [Conv2d(channels, width, 3, padding=1, bias=False), group_norm(width), ReLU()]
    c = width
    for stage, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            layers += [basic_block(c, c_out, stride), ReLU()]
            c = c_out
    layers += [GlobalAvgPool2d(), Linear(c, num_classes)]
    return tuple(layers)


# --------------------------------------------------------------------------- transformers


@dataclass(frozen=True)
class TransformerConfig:
    """The shape of a pretrained BERT or ViT encoder (the fields of its HF ``config.json``)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float = 1e-12
    vocab_size: int = 0
    max_positions: int = 0
    type_vocab_size: int = 0
    image_size: int = 0
    patch_size: int = 0
    num_channels: int = 3

    @classmethod
    def from_hf(cls, config: Mapping[str, object]) -> TransformerConfig:
        def get(name: str, default: object = 0) -> object:
            return config.get(name, default)

        return cls(
            hidden_size=int(get("hidden_size")),  # type: ignore[call-overload]
            num_layers=int(get("num_hidden_layers")),  # type: ignore[call-overload]
            num_heads=int(get("num_attention_heads")),  # type: ignore[call-overload]
            intermediate_size=int(get("intermediate_size")),  # type: ignore[call-overload]
            layer_norm_eps=float(get("layer_norm_eps", 1e-12)),  # type: ignore[arg-type]
            vocab_size=int(get("vocab_size")),  # type: ignore[call-overload]
            max_positions=int(get("max_position_embeddings")),  # type: ignore[call-overload]
            type_vocab_size=int(get("type_vocab_size")),  # type: ignore[call-overload]
            image_size=int(get("image_size")),  # type: ignore[call-overload]
            patch_size=int(get("patch_size")),  # type: ignore[call-overload]
            num_channels=int(get("num_channels", 3)),  # type: ignore[call-overload]
        )


def _projection(name: str, dim: int, lora: tuple[str, ...], rank: int, alpha: float) -> Layer:
    if name in lora:
        return LoRALinear(dim, dim, rank=rank, alpha=alpha)
    return Linear(dim, dim, trainable=False)


def transformer_block(
    cfg: TransformerConfig, lora: tuple[str, ...], rank: int, alpha: float, *, norm_first: bool
) -> TransformerBlock:
    """One frozen encoder block with LoRA on the attention projections named in ``lora``."""
    unknown = set(lora) - set(PROJECTIONS)
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)} (known: {', '.join(PROJECTIONS)})")
    d = cfg.hidden_size
    attention = SelfAttention(d, cfg.num_heads, *(_projection(n, d, lora, rank, alpha) for n in PROJECTIONS))
    return TransformerBlock(
        attention=attention,
        norm1=LayerNorm(d, cfg.layer_norm_eps, trainable=False),
        fc1=Linear(d, cfg.intermediate_size, trainable=False),
        fc2=Linear(cfg.intermediate_size, d, trainable=False),
        norm2=LayerNorm(d, cfg.layer_norm_eps, trainable=False),
        activation="gelu_erf",
        norm_first=norm_first,
    )


def bert_encoder(
    cfg: TransformerConfig,
    num_layers: int,
    lora: tuple[str, ...] = ("query", "value"),
    rank: int = 8,
    alpha: float = 8.0,
) -> TextEncoder:
    """The first ``num_layers`` blocks of a BERT encoder, frozen, LoRA on ``lora``, mean pooling."""
    if not 1 <= num_layers <= cfg.num_layers:
        raise ValueError(f"num_layers must be in 1..{cfg.num_layers}")
    embeddings = TokenEmbeddings(
        cfg.vocab_size, cfg.max_positions, cfg.type_vocab_size, cfg.hidden_size, cfg.layer_norm_eps
    )
    blocks = tuple(transformer_block(cfg, lora, rank, alpha, norm_first=False) for _ in range(num_layers))
    return TextEncoder(embeddings, Sequential(blocks))


def vit_encoder(
    cfg: TransformerConfig, lora: tuple[str, ...] = ("query", "value"), rank: int = 8, alpha: float = 8.0
) -> VisionEncoder:
    """A frozen ViT encoder (pre-LN blocks) with LoRA on ``lora``, class-token output."""
    embeddings = PatchEmbeddings(cfg.image_size, cfg.patch_size, cfg.num_channels, cfg.hidden_size)
    blocks = tuple(transformer_block(cfg, lora, rank, alpha, norm_first=True) for _ in range(cfg.num_layers))
    return VisionEncoder(
        embeddings, Sequential(blocks), LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, trainable=False)
    )


def _projection_target(block: str, name: str, lora: tuple[str, ...]) -> str:
    return f"{block}.attention.{name}.base" if name in lora else f"{block}.attention.{name}"


def bert_weights(
    weights: Mapping[str, np.ndarray], prefix: str, num_layers: int, lora: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """HF ``BertModel`` checkpoint names -> spec paths under ``prefix`` (the encoder's path).

    Unused checkpoint entries (later layers, the pooler, ``position_ids``) are dropped.
    """
    out: dict[str, np.ndarray] = {}
    emb = {"word_embeddings": "word", "position_embeddings": "position", "token_type_embeddings": "token_type"}
    for hf, ours in emb.items():
        out[f"{prefix}.embeddings.{ours}.weight"] = weights[f"embeddings.{hf}.weight"]
    for p in ("weight", "bias"):
        out[f"{prefix}.embeddings.norm.{p}"] = weights[f"embeddings.LayerNorm.{p}"]
    for i in range(num_layers):
        hf, blk = f"encoder.layer.{i}", f"{prefix}.blocks.{i}"
        pairs = {
            **{f"attention.self.{n}": _projection_target(blk, n, lora) for n in ("query", "key", "value")},
            "attention.output.dense": _projection_target(blk, "output", lora),
            "attention.output.LayerNorm": f"{blk}.norm1",
            "intermediate.dense": f"{blk}.fc1",
            "output.dense": f"{blk}.fc2",
            "output.LayerNorm": f"{blk}.norm2",
        }
        for src, dst in pairs.items():
            for p in ("weight", "bias"):
                out[f"{dst}.{p}"] = weights[f"{hf}.{src}.{p}"]
    return out


def vit_weights(
    weights: Mapping[str, np.ndarray], prefix: str, num_layers: int, lora: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """HF ``ViTModel`` / ``ViTForImageClassification`` checkpoint names (with or without the
    ``vit.`` prefix) -> spec paths under ``prefix``. The pretrained classifier is dropped."""
    src = {k.removeprefix("vit."): v for k, v in weights.items()}
    out: dict[str, np.ndarray] = {
        f"{prefix}.embeddings.cls_token": src["embeddings.cls_token"],
        f"{prefix}.embeddings.position_embeddings": src["embeddings.position_embeddings"],
    }
    for p in ("weight", "bias"):
        out[f"{prefix}.embeddings.projection.{p}"] = src[f"embeddings.patch_embeddings.projection.{p}"]
        out[f"{prefix}.norm.{p}"] = src[f"layernorm.{p}"]
    for i in range(num_layers):
        hf, blk = f"encoder.layer.{i}", f"{prefix}.blocks.{i}"
        pairs = {
            **{f"attention.attention.{n}": _projection_target(blk, n, lora) for n in ("query", "key", "value")},
            "attention.output.dense": _projection_target(blk, "output", lora),
            "layernorm_before": f"{blk}.norm1",
            "intermediate.dense": f"{blk}.fc1",
            "output.dense": f"{blk}.fc2",
            "layernorm_after": f"{blk}.norm2",
        }
        for s, dst in pairs.items():
            for p in ("weight", "bias"):
                out[f"{dst}.{p}"] = src[f"{hf}.{s}.{p}"]
    return out
