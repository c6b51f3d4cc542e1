"""Builds a suite's model spec into JAX: a pure forward pass from one flat parameter vector.

:class:`JaxModel` holds the spec, the canonical :class:`~backends.layout.ParamLayout` and the
frozen parameters, and runs ``apply(flat, x)``. Arrays keep PyTorch's layout throughout
(Linear weight ``(out, in)``, Conv2d weight ``(out, in, kh, kw)``, NCHW activations), so a
flat vector means the same model here and in the torch backend; XLA chooses its own internal
layouts, so no explicit transposes are needed for speed.

Taps: :meth:`JaxModel.apply_tapped` also takes one perturbation per trainable tapped layer,
added to that layer's pre-activation ``s``, and returns the layer inputs ``a``. Differentiating
with respect to zero perturbations gives ``e = dl/ds`` (the oracle does this), so one forward
serves the loss, the logits, the gradient and the taps. Composites call their children through
the model, so tapped layers inside composites (LoRA adapters, attention projections) are
recorded too, in execution order (checked against ``ParamLayout.tapped`` at trace time).

Every layer kind of ``suites.layers`` is implemented once here: leaves via
:func:`register_layer` (``forward(layer, params, x)``), composites via
:func:`register_composite` (``forward(layer, params, x, call, **ctx)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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

Array = jax.Array
#: ``forward(layer, params, x)``: the layer's parameters by name (trainable and frozen) and the
#: batched input; tapped layers return the pre-activation ``s``.
LayerForward = Callable[[Any, Mapping[str, Array], Array], Array]
Call = Callable[..., Array]

_IMPLS: dict[str, LayerForward] = {}
_COMPOSITES: set[str] = set()


def register_layer(kind: str, forward: LayerForward) -> None:
    """Implement leaf layer ``kind`` for JAX (the counterpart of ``backends.torch.models.register_layer``)."""
    _IMPLS[kind] = forward
    _COMPOSITES.discard(kind)


def register_composite(kind: str, forward: Callable[..., Array]) -> None:
    """Implement composite layer ``kind``: ``forward(layer, params, x, call, **ctx)`` with
    ``call(child_name, h, **ctx)`` running a child through the model."""
    _IMPLS[kind] = forward
    _COMPOSITES.add(kind)


def _impl(layer: Layer) -> LayerForward:
    try:
        return _IMPLS[layer.kind]
    except KeyError:
        raise NotImplementedError(f"layer kind {layer.kind!r} has no JAX implementation") from None


# --------------------------------------------------------------------------- leaves


def _linear(layer: Linear, p: Mapping[str, Array], x: Array) -> Array:
    # s = a W^T + b, contracting the last axis of x with the "in" axis of the (out, in) weight.
    s = jax.lax.dot_general(x, p["weight"], (((x.ndim - 1,), (1,)), ((), ())))
    return s + p["bias"] if "bias" in p else s


def _conv2d(layer: Conv2d, p: Mapping[str, Array], x: Array) -> Array:
    s = jax.lax.conv_general_dilated(
        x,
        p["weight"],
        window_strides=(layer.stride, layer.stride),
        padding=((layer.padding, layer.padding), (layer.padding, layer.padding)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return s + p["bias"][:, None, None] if "bias" in p else s


_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    # torch.nn.GELU(approximate="tanh"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    # torch.nn.GELU(): x Phi(x) = 0.5 x (1 + erf(x / sqrt(2))).
    "gelu_erf": lambda x: jax.nn.gelu(x, approximate=False),
}


def _pool(layer: Pool2d, p: Mapping[str, Array], x: Array) -> Array:
    k, s, pad = layer.kernel_size, layer.step, layer.padding
    window, strides = (1, 1, k, k), (1, 1, s, s)
    padding = ((0, 0), (0, 0), (pad, pad), (pad, pad))
    # Concrete numpy identities: JAX then uses its differentiable reduce_window_{max,sum}
    # primitives (a traced init value would select the generic, non-differentiable reducer).
    if layer.mode == "max":
        return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max, window, strides, padding)
    # count_include_pad=True: padded zeros count, so the divisor is always k * k.
    return jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, window, strides, padding) / (k * k)


def _resize(layer: Resize, p: Mapping[str, Array], x: Array) -> Array:
    rh = jnp.asarray(layer.matrix(x.shape[-2]), dtype=x.dtype)
    rw = jnp.asarray(layer.matrix(x.shape[-1]), dtype=x.dtype)
    return jnp.einsum("ih,bchw,jw->bcij", rh, x, rw)


def _layer_norm(layer: LayerNorm, p: Mapping[str, Array], x: Array) -> Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + layer.eps) * p["weight"] + p["bias"]


def _group_norm(layer: GroupNorm, p: Mapping[str, Array], x: Array) -> Array:
    b, c = x.shape[:2]
    g = x.reshape(b, layer.num_groups, -1)
    mean = jnp.mean(g, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=-1, keepdims=True)
    y = ((g - mean) * jax.lax.rsqrt(var + layer.eps)).reshape(x.shape)
    expand = (1, c) + (1,) * (x.ndim - 2)
    return y * p["weight"].reshape(expand) + p["bias"].reshape(expand)


def _rosenbrock(layer: Rosenbrock, p: Mapping[str, Array], x: Array) -> Array:
    theta = p["theta"]
    r = jnp.stack([layer.a - theta[0], math.sqrt(layer.b) * (theta[1] - theta[0] ** 2)])
    return jnp.broadcast_to(r, (x.shape[0], 2))


register_layer("linear", _linear)
register_layer("conv2d", _conv2d)
register_layer("activation", lambda l, p, x: _ACTIVATIONS[l.function](x))
register_layer("flatten", lambda l, p, x: x.reshape(x.shape[0], -1))
register_layer("reshape", lambda l, p, x: x.reshape(x.shape[0], *l.shape))
register_layer("pool2d", _pool)
register_layer("global_avg_pool2d", lambda l, p, x: jnp.mean(x, axis=(-2, -1)))
register_layer("resize", _resize)
register_layer("layer_norm", _layer_norm)
register_layer("group_norm", _group_norm)
register_layer("embedding", lambda l, p, x: jnp.take(p["weight"], x, axis=0))
register_layer("rosenbrock", _rosenbrock)


# --------------------------------------------------------------------------- composites


def _sequential(layer: Sequential, p: Mapping[str, Array], x: Array, call: Call, **ctx: Any) -> Array:
    for name, _ in layer.children():
        x = call(name, x, **ctx)
    return x


def _residual(layer: Residual, p: Mapping[str, Array], x: Array, call: Call, **ctx: Any) -> Array:
    out = call("body", x, **ctx)
    return out + (call("shortcut", x, **ctx) if layer.shortcut is not None else x)


def _lora(layer: LoRALinear, p: Mapping[str, Array], x: Array, call: Call, **ctx: Any) -> Array:
    base = call("base", x)
    return base + layer.scale * call("lora_B", call("lora_A", x))


def _attention(layer: SelfAttention, p: Mapping[str, Array], h: Array, call: Call, **ctx: Any) -> Array:
    mask = ctx.get("mask")
    batch, length, _ = h.shape
    heads, dh = layer.num_heads, layer.head_dim

    def split(t: Array) -> Array:
        return t.reshape(batch, length, heads, dh).transpose(0, 2, 1, 3)

    q, k, v = split(call("query", h)), split(call("key", h)), split(call("value", h))
    scores = (q @ jnp.swapaxes(k, -1, -2)) / math.sqrt(dh)
    if mask is not None:
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    a = jax.nn.softmax(scores, axis=-1) @ v
    return call("output", a.transpose(0, 2, 1, 3).reshape(batch, length, heads * dh))


def _block(layer: TransformerBlock, p: Mapping[str, Array], h: Array, call: Call, **ctx: Any) -> Array:
    act = _ACTIVATIONS[layer.activation]
    if layer.norm_first:
        h = h + call("attention", call("norm1", h), **ctx)
        return h + call("fc2", act(call("fc1", call("norm2", h))))
    h = call("norm1", h + call("attention", h, **ctx))
    return call("norm2", h + call("fc2", act(call("fc1", h))))


def _token_embeddings(layer: TokenEmbeddings, p: Mapping[str, Array], ids: Array, call: Call, **ctx: Any) -> Array:
    positions = jnp.arange(ids.shape[-1])
    h = call("word", ids) + call("position", positions) + call("token_type", jnp.zeros_like(positions))
    return call("norm", h)


def _text_encoder(layer: TextEncoder, p: Mapping[str, Array], ids: Array, call: Call, **ctx: Any) -> Array:
    mask = ids != layer.pad_id
    h = call("blocks", call("embeddings", ids), mask=mask)
    m = mask[..., None].astype(h.dtype)
    return jnp.sum(h * m, axis=1) / jnp.sum(m, axis=1)


def _patch_embeddings(layer: PatchEmbeddings, p: Mapping[str, Array], x: Array, call: Call, **ctx: Any) -> Array:
    s = call("projection", x)
    patches = s.reshape(s.shape[0], s.shape[1], -1).transpose(0, 2, 1)  # (B, N, dim)
    cls = jnp.broadcast_to(p["cls_token"], (x.shape[0], 1, patches.shape[-1]))
    return jnp.concatenate([cls, patches], axis=1) + p["position_embeddings"]


def _vision_encoder(layer: VisionEncoder, p: Mapping[str, Array], x: Array, call: Call, **ctx: Any) -> Array:
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


@dataclass
class _Node:
    """One layer of the compiled tree: its forward, parameter slot and tap index."""

    layer: Layer
    forward: Callable[..., Array]
    composite: bool
    path: str
    slot: int
    tap_index: int | None
    children: dict[str, _Node]


class JaxModel:
    """Pure forward of a model spec from a flat trainable-parameter vector (canonical order).

    ``initial_flat`` holds the trainable initial values; ``frozen`` maps each frozen
    parameter's path (``"<layer>.<name>"``, ``"0.embeddings.word.weight"``) to its array (held
    apart from the flat vector and passed explicitly, so a jitted step receives them as
    arguments instead of baking them into the executable).
    """

    def __init__(self, spec: ModelSpec, arrays: Sequence[np.ndarray], dtype: Any) -> None:
        self.spec = spec
        self.layout = ParamLayout(spec)
        self.dtype = dtype
        taps = {t.path: t.tap_index for t in self.layout.tapped}
        nodes: dict[str, _Node] = {}
        self._roots: list[_Node] = []
        for n in spec.walk():
            kind = n.layer.kind
            node = _Node(n.layer, _impl(n.layer), kind in _COMPOSITES, n.path, len(nodes), taps.get(n.path), {})
            nodes[n.path] = node
            if n.parent is None:
                self._roots.append(node)
            else:
                nodes[n.parent].children[n.path.rsplit(".", 1)[1]] = node
        self._num_nodes = len(nodes)
        self._slot = {path: node.slot for path, node in nodes.items()}
        flat_parts: list[np.ndarray] = []
        frozen: dict[str, Array] = {}
        self._trainable: list[tuple[int, str, int, int, tuple[int, ...]]] = []
        self._frozen_slots: dict[str, tuple[int, str]] = {}
        block = {b.name: b for b in self.layout.blocks}
        for e, value in zip(spec.param_entries(), arrays, strict=True):
            a = np.asarray(value, dtype=dtype)
            slot = nodes[e.node].slot
            if e.spec.trainable:
                flat_parts.append(a.reshape(-1))
                b = block[e.path]
                self._trainable.append((slot, e.local_name, b.offset, b.stop, b.shape))
            else:
                frozen[e.path] = jnp.asarray(a)
                self._frozen_slots[e.path] = (slot, e.local_name)
        self.initial_flat = np.concatenate(flat_parts) if flat_parts else np.zeros(0, dtype=dtype)
        self.frozen = frozen
        self._impls = [_impl(layer) for layer in spec.layers]

    def tap_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        """Pre-activation shapes ``(B, *out)`` of the trainable tapped layers, in tap order."""
        return [(batch_size, *t.output_shape) for t in self.layout.tapped]

    def layer_params(self, flat: Array, frozen: Mapping[str, Array] | None = None) -> list[dict[str, Array]]:
        """Per-top-level-layer parameter dicts keyed by the path below the layer (``"weight"``,
        ``"body.0.weight"``): static slices of ``flat`` plus the frozen arrays."""
        out: list[dict[str, Array]] = [{} for _ in self.spec.layers]
        for b in self.layout.blocks:
            out[b.layer_index][b.role] = flat[b.offset : b.stop].reshape(b.shape)
        for key, value in (self.frozen if frozen is None else frozen).items():
            layer_index, name = key.split(".", 1)
            out[int(layer_index)][name] = value
        return out

    def _node_params(self, flat: Array, frozen: Mapping[str, Array] | None) -> list[dict[str, Array]]:
        out: list[dict[str, Array]] = [{} for _ in range(self._num_nodes)]
        for slot, name, start, stop, shape in self._trainable:
            out[slot][name] = flat[start:stop].reshape(shape)
        for key, value in (self.frozen if frozen is None else frozen).items():
            slot, name = self._frozen_slots[key]
            out[slot][name] = value
        return out

    def apply(self, flat: Array, x: Array, frozen: Mapping[str, Array] | None = None) -> Array:
        """Logits ``z`` of the batch ``x`` (``(B, *input_shape)``)."""
        return self.apply_tapped(flat, x, None, frozen)[0]

    def apply_tapped(
        self,
        flat: Array,
        x: Array,
        perturbations: Sequence[Array] | Callable[[int, Array, Array], Array] | None,
        frozen: Mapping[str, Array] | None = None,
    ) -> tuple[Array, list[Array]]:
        """``(z, inputs)``: logits, and the input ``a`` of every trainable tapped layer.

        With ``perturbations`` (one per tapped layer, shaped like its pre-activation) each is
        added to that layer's ``s``; without, nothing is recorded and ``inputs`` is empty. A
        callable ``perturbations(k, s, a) -> s'`` replaces tapped layer ``k``'s pre-activation
        instead (``JaxProblem.apply``'s ``at_tap`` hook).
        """
        params = self._node_params(flat, frozen)
        inputs: list[Array] = []
        h = x
        for node in self._roots:
            h = self._run(node, params, h, perturbations, inputs, {})
        if perturbations is not None and len(inputs) != len(self.layout.tapped):
            raise RuntimeError(f"recorded {len(inputs)} taps, the layout has {len(self.layout.tapped)}")
        return h, inputs

    def _run(
        self,
        node: _Node,
        params: list[dict[str, Array]],
        x: Array,
        perturbations: Sequence[Array] | Callable[[int, Array, Array], Array] | None,
        inputs: list[Array],
        ctx: dict[str, Any],
    ) -> Array:
        if node.composite:

            def call(name: str, h: Array, **kw: Any) -> Array:
                return self._run(node.children[name], params, h, perturbations, inputs, kw)

            return node.forward(node.layer, params[node.slot], x, call, **ctx)
        out = node.forward(node.layer, params[node.slot], x)
        if perturbations is not None and node.tap_index is not None:
            if len(inputs) != node.tap_index:
                raise RuntimeError(f"tapped layer {node.path} ran as tap {len(inputs)}, layout says {node.tap_index}")
            inputs.append(x)
            if callable(perturbations):
                out = perturbations(node.tap_index, out, x)
            else:
                out = out + perturbations[node.tap_index]
        return out

    __call__ = apply
