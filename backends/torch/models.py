"""Builds a suite's model spec into PyTorch: a plain ``nn.Module`` and a functional forward.

Two views of the same model, tested to agree:

* :func:`build_module` gives an ``nn.Sequential`` of standard modules (``nn.Linear``,
  ``nn.Conv2d``, ``nn.LayerNorm``, ``nn.GroupNorm``, ``nn.Embedding`` ...; composites are
  :class:`SpecModule` containers of them) holding given parameter values, so external tools
  (curvlinops, BackPACK, ASDL) can consume it. Its trainable ``named_parameters()`` are the
  canonical flat order with the spec's path names. Frozen parameters are parameters with
  ``requires_grad=False`` (PEFT's convention, e.g. ``peft``'s frozen base weights).
* :class:`TorchModel` runs the forward pass functionally from a flat parameter vector (cheaper
  than ``functional_call`` on the hot path, and differentiable with ``torch.func``). It can
  record *taps*: the input ``a`` and the pre-activation ``s`` of every trainable tapped layer;
  the gradient with respect to ``s`` is ``e = dl/ds``. Composites call their
  children through the model, so layers inside composites are tapped too, in execution order
  (checked against ``ParamLayout.tapped``).

Every layer kind of ``suites.layers`` is implemented once here: leaves via
:func:`register_layer` (``forward(layer, params, x)``), composites via
:func:`register_composite` (``forward(layer, params, x, call, **ctx)`` where
``call(child_name, h, **ctx)`` runs a child).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backends.layout import ParamLayout
from suites.layers import (
    Activation,
    Conv2d,
    Embedding,
    Flatten,
    GlobalAvgPool2d,
    GroupNorm,
    Layer,
    LayerNorm,
    Linear,
    LoRALinear,
    ModelSpec,
    PatchEmbeddings,
    Pool2d,
    Reshape,
    Residual,
    Resize,
    Rosenbrock,
    SelfAttention,
    Sequential,
    TextEncoder,
    TokenEmbeddings,
    TransformerBlock,
    VisionEncoder,
)


@dataclass
class Taps:
    """Per-forward record of tapped layers, in ``ParamLayout.tapped`` order.

    ``inputs[k]`` is the input ``a`` of tapped layer ``k``; ``outputs[k]`` (if ``perturb``) is
    its pre-activation ``s`` itself, a non-leaf tensor of the graph: the gradient of a loss with
    respect to it (``torch.autograd.grad(loss, taps.outputs)``) is that layer's pre-activation
    gradient ``e = dl/ds``. Differentiating with respect to the intermediate gives the same
    numbers as adding a zero perturbation and differentiating with respect to it (the
    perturbation's ``AddBackward`` passes the cotangent through unchanged), without the zero
    tensor, the addition and their backward node on every tapped layer (docs/profiling.md).
    """

    perturb: bool = True
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)

    @property
    def perturbations(self) -> list[Tensor]:
        """The tensors to differentiate with respect to for ``e`` (an alias of ``outputs``)."""
        return self.outputs

    def record(self, a: Tensor, s: Tensor) -> Tensor:
        self.inputs.append(a)
        if self.perturb:
            self.outputs.append(s)
        return s


Call = Callable[..., Tensor]


@dataclass(frozen=True)
class LayerImpl:
    """``module(layer)`` (leaves; ``None``: a generic :class:`SpecModule`) and the functional
    forward; composites' forwards take ``call`` and keyword context."""

    module: Callable[[Any], nn.Module] | None
    forward: Callable[..., Tensor]
    composite: bool = False


_IMPLS: dict[str, LayerImpl] = {}


def register_layer(
    kind: str,
    module: Callable[[Any], nn.Module] | None,
    forward: Callable[[Any, dict[str, Tensor], Tensor], Tensor],
) -> None:
    """Implement leaf layer ``kind``: an ``nn.Module`` factory and a functional forward.

    ``forward(layer, params, x)`` gets the layer's parameters by name (trainable and frozen) and
    the batched input. Tapped layers return the pre-activation ``s``; the model adds the tap.
    ``module=None`` wraps the functional forward in a :class:`SpecModule`.
    """
    _IMPLS[kind] = LayerImpl(module, forward)


def register_composite(kind: str, forward: Callable[..., Tensor]) -> None:
    """Implement composite layer ``kind``: ``forward(layer, params, x, call, **ctx)``.

    ``params`` holds the composite's own parameters (usually none); ``call(name, h, **ctx)``
    runs child ``name`` (through the model, so taps are recorded) with keyword context such
    as an attention mask. Its module is a :class:`SpecModule` holding the children's modules.
    """
    _IMPLS[kind] = LayerImpl(None, forward, composite=True)


def _impl(layer: Layer) -> LayerImpl:
    try:
        return _IMPLS[layer.kind]
    except KeyError:
        raise NotImplementedError(f"layer kind {layer.kind!r} has no torch implementation") from None


# --------------------------------------------------------------------------- leaves

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_erf": F.gelu,
}
_ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": lambda: nn.GELU(approximate="tanh"),
    "gelu_erf": nn.GELU,
}


class _Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


def _pool(layer: Pool2d, p: dict[str, Tensor], x: Tensor) -> Tensor:
    if layer.mode == "max":
        return F.max_pool2d(x, layer.kernel_size, layer.step, layer.padding)
    return F.avg_pool2d(x, layer.kernel_size, layer.step, layer.padding, count_include_pad=True)


def _pool_module(layer: Pool2d) -> nn.Module:
    if layer.mode == "max":
        return nn.MaxPool2d(layer.kernel_size, layer.step, layer.padding)
    return nn.AvgPool2d(layer.kernel_size, layer.step, layer.padding, count_include_pad=True)


def _resize(layer: Resize, p: dict[str, Tensor], x: Tensor) -> Tensor:
    rh = torch.as_tensor(layer.matrix(x.shape[-2]), dtype=x.dtype, device=x.device)
    rw = torch.as_tensor(layer.matrix(x.shape[-1]), dtype=x.dtype, device=x.device)
    return rh @ x @ rw.T


def _rosenbrock(layer: Rosenbrock, p: dict[str, Tensor], x: Tensor) -> Tensor:
    theta = p["theta"]
    r = torch.stack([layer.a - theta[0], math.sqrt(layer.b) * (theta[1] - theta[0] ** 2)])
    return r.expand(x.shape[0], 2)


register_layer(
    "linear",
    lambda l: nn.Linear(l.in_features, l.out_features, bias=l.bias),
    lambda l, p, x: F.linear(x, p["weight"], p.get("bias")),
)
register_layer(
    "conv2d",
    lambda l: nn.Conv2d(l.in_channels, l.out_channels, l.kernel_size, l.stride, l.padding, bias=l.bias),
    lambda l, p, x: F.conv2d(x, p["weight"], p.get("bias"), l.stride, l.padding),
)
register_layer(
    "activation",
    lambda l: _ACTIVATION_MODULES[l.function](),
    lambda l, p, x: _ACTIVATIONS[l.function](x),
)
register_layer("flatten", lambda l: nn.Flatten(), lambda l, p, x: x.reshape(x.shape[0], -1))
register_layer("reshape", lambda l: _Reshape(l.shape), lambda l, p, x: x.reshape(x.shape[0], *l.shape))
register_layer("pool2d", _pool_module, _pool)
register_layer("global_avg_pool2d", None, lambda l, p, x: x.mean(dim=(-2, -1)))
register_layer("resize", None, _resize)
register_layer(
    "layer_norm",
    lambda l: nn.LayerNorm(l.dim, eps=l.eps),
    lambda l, p, x: F.layer_norm(x, (l.dim,), p["weight"], p["bias"], l.eps),
)
register_layer(
    "group_norm",
    lambda l: nn.GroupNorm(l.num_groups, l.num_channels, eps=l.eps),
    lambda l, p, x: F.group_norm(x, l.num_groups, p["weight"], p["bias"], l.eps),
)
register_layer(
    "embedding",
    lambda l: nn.Embedding(l.num_embeddings, l.embedding_dim),
    lambda l, p, x: F.embedding(x, p["weight"]),
)
register_layer("rosenbrock", None, _rosenbrock)


# --------------------------------------------------------------------------- composites


def _sequential(layer: Sequential, p: dict[str, Tensor], x: Tensor, call: Call, **ctx: Any) -> Tensor:
    for name, _ in layer.children():
        x = call(name, x, **ctx)
    return x


def _residual(layer: Residual, p: dict[str, Tensor], x: Tensor, call: Call, **ctx: Any) -> Tensor:
    out = call("body", x, **ctx)
    return out + (call("shortcut", x, **ctx) if layer.shortcut is not None else x)


def _lora(layer: LoRALinear, p: dict[str, Tensor], x: Tensor, call: Call, **ctx: Any) -> Tensor:
    base = call("base", x)
    return base + layer.scale * call("lora_B", call("lora_A", x))


def _attention(layer: SelfAttention, p: dict[str, Tensor], h: Tensor, call: Call, **ctx: Any) -> Tensor:
    mask: Tensor | None = ctx.get("mask")
    batch, length, _ = h.shape
    heads, dh = layer.num_heads, layer.head_dim

    def split(t: Tensor) -> Tensor:
        return t.reshape(batch, length, heads, dh).transpose(1, 2)

    q, k, v = split(call("query", h)), split(call("key", h)), split(call("value", h))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    a = torch.softmax(scores, dim=-1) @ v
    return call("output", a.transpose(1, 2).reshape(batch, length, heads * dh))


def _block(layer: TransformerBlock, p: dict[str, Tensor], h: Tensor, call: Call, **ctx: Any) -> Tensor:
    act = _ACTIVATIONS[layer.activation]
    if layer.norm_first:
        h = h + call("attention", call("norm1", h), **ctx)
        return h + call("fc2", act(call("fc1", call("norm2", h))))
    h = call("norm1", h + call("attention", h, **ctx))
    return call("norm2", h + call("fc2", act(call("fc1", h))))


def _token_embeddings(layer: TokenEmbeddings, p: dict[str, Tensor], ids: Tensor, call: Call, **ctx: Any) -> Tensor:
    positions = torch.arange(ids.shape[-1], device=ids.device)
    h = call("word", ids) + call("position", positions) + call("token_type", torch.zeros_like(positions))
    return call("norm", h)


def _text_encoder(layer: TextEncoder, p: dict[str, Tensor], ids: Tensor, call: Call, **ctx: Any) -> Tensor:
    mask = ids != layer.pad_id
    h = call("blocks", call("embeddings", ids), mask=mask)
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(dim=1) / m.sum(dim=1)


def _patch_embeddings(layer: PatchEmbeddings, p: dict[str, Tensor], x: Tensor, call: Call, **ctx: Any) -> Tensor:
    patches = call("projection", x).flatten(2).transpose(1, 2)  # (B, N, dim)
    cls = p["cls_token"].expand(x.shape[0], -1, -1)
    return torch.cat([cls, patches], dim=1) + p["position_embeddings"]


def _vision_encoder(layer: VisionEncoder, p: dict[str, Tensor], x: Tensor, call: Call, **ctx: Any) -> Tensor:
    h = call("norm", call("blocks", call("embeddings", x)))
    return h[:, 0]


register_composite("sequential", _sequential)
register_composite("residual", _residual)
register_composite("lora_linear", _lora)
register_composite("self_attention", _attention)
register_composite("transformer_block", _block)
register_composite("token_embeddings", _token_embeddings)
register_composite("text_encoder", _text_encoder)
register_composite("patch_embeddings", _patch_embeddings)
register_composite("vision_encoder", _vision_encoder)

# Keep the imported layer classes referenced: they document which kinds are implemented here.
_IMPLEMENTED = (
    Linear, Conv2d, Activation, Flatten, Reshape, Pool2d, GlobalAvgPool2d, Resize, LayerNorm, GroupNorm,
    Embedding, Rosenbrock, Sequential, Residual, LoRALinear, SelfAttention, TransformerBlock, TokenEmbeddings,
    TextEncoder, PatchEmbeddings, VisionEncoder,
)  # fmt: skip


# --------------------------------------------------------------------------- nn.Module view


class SpecModule(nn.Module):
    """An ``nn.Module`` for a layer without a standard module: its own parameters (named as in
    the spec) and its children's modules, running the registered functional forward."""

    def __init__(self, layer: Layer) -> None:
        super().__init__()
        self.layer = layer
        self._impl = _impl(layer)
        for p in layer.params():
            self.register_parameter(p.name, nn.Parameter(torch.empty(p.shape)))
        for name, child in layer.children():
            self.add_module(name, _module(child))

    def forward(self, x: Tensor, **ctx: Any) -> Tensor:
        params = dict(self.named_parameters(recurse=False))
        if not self._impl.composite:
            return self._impl.forward(self.layer, params, x)

        def call(name: str, h: Tensor, **kw: Any) -> Tensor:
            child = self._modules[name]
            assert child is not None
            return child(h, **kw) if isinstance(child, SpecModule) and child._impl.composite else child(h)

        return self._impl.forward(self.layer, params, x, call, **ctx)


def _module(layer: Layer) -> nn.Module:
    impl = _impl(layer)
    if impl.module is None or impl.composite:
        return SpecModule(layer)
    return impl.module(layer)


def build_module(spec: ModelSpec, arrays: Sequence[np.ndarray], dtype: torch.dtype, device: torch.device) -> nn.Module:
    """An ``nn.Sequential`` holding ``arrays`` (all parameters, canonical order).

    Its ``named_parameters()`` are the spec's paths in canonical order (checked here), trainable
    ones with ``requires_grad=True``.
    """
    model = nn.Sequential(*(_module(layer) for layer in spec.layers)).to(device=device, dtype=dtype)
    entries = spec.param_entries()
    names = [name for name, _ in model.named_parameters()]
    if names != [e.path for e in entries]:
        raise RuntimeError(f"torch module parameter names {names[:4]}... differ from the spec's canonical paths")
    for e, value in zip(entries, arrays, strict=True):
        param = model.get_parameter(e.path)
        with torch.no_grad():
            param.copy_(torch.as_tensor(np.asarray(value), dtype=dtype, device=device))
        param.requires_grad_(e.spec.trainable)
    return model


# --------------------------------------------------------------------------- functional view


@dataclass
class _Node:
    """One layer of the compiled tree: its implementation, parameter slot and tap index."""

    layer: Layer
    impl: LayerImpl
    path: str
    slot: int
    tap_index: int | None
    children: dict[str, _Node]


class TorchModel:
    """Functional forward of a model spec from a flat trainable-parameter vector."""

    def __init__(self, spec: ModelSpec, arrays: Sequence[np.ndarray], dtype: torch.dtype, device: torch.device) -> None:
        self.spec = spec
        self.layout = ParamLayout(spec)
        self.dtype = dtype
        self.device = device
        taps = {t.path: t.tap_index for t in self.layout.tapped}
        nodes: dict[str, _Node] = {}
        self._roots: list[_Node] = []
        for n in spec.walk():
            node = _Node(n.layer, _impl(n.layer), n.path, len(nodes), taps.get(n.path), {})
            nodes[n.path] = node
            if n.parent is None:
                self._roots.append(node)
            else:
                nodes[n.parent].children[n.path.rsplit(".", 1)[1]] = node
        self._num_nodes = len(nodes)
        # (slot, local name, block index) of trainable and (slot, local name, tensor) of frozen parameters.
        self._trainable: list[tuple[int, str, int, tuple[int, ...]]] = []
        self._frozen_entries: list[tuple[int, str, Tensor]] = []
        self._frozen: dict[str, Tensor] = {}
        block_index = {b.name: i for i, b in enumerate(self.layout.blocks)}
        flat_parts = []
        for e, value in zip(spec.param_entries(), arrays, strict=True):
            t = torch.as_tensor(np.asarray(value), dtype=dtype, device=device)
            slot = nodes[e.node].slot
            if e.spec.trainable:
                flat_parts.append(t.reshape(-1))
                self._trainable.append((slot, e.local_name, block_index[e.path], tuple(e.spec.shape)))
            else:
                self._frozen[e.path] = t
                self._frozen_entries.append((slot, e.local_name, t))
        self.initial_flat = torch.cat(flat_parts) if flat_parts else torch.zeros(0, dtype=dtype, device=device)
        self._block_sizes = [b.size for b in self.layout.blocks]
        self._impls = [_impl(layer) for layer in spec.layers]

    def _node_params(self, flat: Tensor) -> list[dict[str, Tensor]]:
        """Per-node parameter dicts (views into ``flat`` plus frozen tensors).

        ``torch.split`` rather than slicing: its backward concatenates the block gradients
        once, where each slice's backward would zero-fill a parameter-sized buffer.
        """
        out: list[dict[str, Tensor]] = [{} for _ in range(self._num_nodes)]
        parts = torch.split(flat, self._block_sizes) if self._block_sizes else ()
        for slot, name, index, shape in self._trainable:
            out[slot][name] = parts[index].view(shape)
        for slot, name, t in self._frozen_entries:
            out[slot][name] = t
        return out

    def layer_params(self, flat: Tensor) -> list[dict[str, Tensor]]:
        """Per-top-level-layer parameter dicts keyed by the path below the layer (``"weight"``,
        ``"body.0.weight"``): views into ``flat`` plus frozen tensors."""
        out: list[dict[str, Tensor]] = [{} for _ in self.spec.layers]
        parts = torch.split(flat, self._block_sizes) if self._block_sizes else ()
        for b, part in zip(self.layout.blocks, parts, strict=True):
            out[b.layer_index][b.role] = part.view(b.shape)
        for name, t in self._frozen.items():
            index, _, role = name.partition(".")
            out[int(index)][role] = t
        return out

    def forward(self, flat: Tensor, x: Tensor, taps: Taps | None = None) -> Tensor:
        params = self._node_params(flat)
        h = x
        for node in self._roots:
            h = self._run(node, params, h, taps, {})
        if taps is not None and len(taps.inputs) != len(self.layout.tapped):
            raise RuntimeError(f"recorded {len(taps.inputs)} taps, the layout has {len(self.layout.tapped)}")
        return h

    def _run(self, node: _Node, params: list[dict[str, Tensor]], x: Tensor, taps: Taps | None, ctx: dict) -> Tensor:
        if node.impl.composite:

            def call(name: str, h: Tensor, **kw: Any) -> Tensor:
                return self._run(node.children[name], params, h, taps, kw)

            return node.impl.forward(node.layer, params[node.slot], x, call, **ctx)
        out = node.impl.forward(node.layer, params[node.slot], x)
        if taps is not None and node.tap_index is not None:
            if len(taps.inputs) != node.tap_index:
                raise RuntimeError(
                    f"tapped layer {node.path} ran as tap {len(taps.inputs)}, layout says {node.tap_index}"
                )
            out = taps.record(x, out)
        return out

    __call__ = forward
