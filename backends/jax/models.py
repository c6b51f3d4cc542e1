"""Builds a suite's model spec into JAX: a pure forward pass from one flat parameter vector.

:class:`JaxModel` holds the spec, the canonical :class:`~backends.layout.ParamLayout` and the
frozen parameters, and runs ``apply(flat, x)``. Arrays keep PyTorch's layout throughout
(Linear weight ``(out, in)``, Conv2d weight ``(out, in, kh, kw)``, NCHW activations), so a
flat vector means the same model here and in the torch backend; XLA chooses its own internal
layouts, so no explicit transposes are needed for speed.

Taps: :meth:`JaxModel.apply_tapped` also takes one perturbation per trainable tapped layer,
added to that layer's pre-activation ``s``, and returns the layer inputs ``a``. Differentiating
with respect to zero perturbations gives ``e = dl/ds`` (the oracle does this), so one forward
serves the loss, the logits, the gradient and the taps.

Every layer kind of ``suites.layers`` is implemented once here via :func:`register_layer`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from backends.layout import ParamLayout
from suites.layers import Activation, Conv2d, Flatten, Layer, Linear, ModelSpec, Reshape

Array = jax.Array
#: ``forward(layer, params, x)``: the layer's parameters by name (trainable and frozen) and the
#: batched input; tapped layers return the pre-activation ``s``.
LayerForward = Callable[[Any, Mapping[str, Array], Array], Array]

_IMPLS: dict[str, LayerForward] = {}


def register_layer(kind: str, forward: LayerForward) -> None:
    """Implement layer ``kind`` for JAX (the counterpart of ``backends.torch.models.register_layer``)."""
    _IMPLS[kind] = forward


def _impl(layer: Layer) -> LayerForward:
    try:
        return _IMPLS[layer.kind]
    except KeyError:
        raise NotImplementedError(f"layer kind {layer.kind!r} has no JAX implementation") from None


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
}

register_layer("linear", _linear)
register_layer("conv2d", _conv2d)
register_layer("activation", lambda l, p, x: _ACTIVATIONS[l.function](x))
register_layer("flatten", lambda l, p, x: x.reshape(x.shape[0], -1))
register_layer("reshape", lambda l, p, x: x.reshape(x.shape[0], *l.shape))

# Keep the imported layer classes referenced: they document which kinds are implemented here.
_IMPLEMENTED = (Linear, Conv2d, Activation, Flatten, Reshape)


class JaxModel:
    """Pure forward of a model spec from a flat trainable-parameter vector (canonical order).

    ``initial_flat`` holds the trainable initial values; ``frozen`` maps ``"<layer>.<name>"``
    to the frozen ones (held apart from the flat vector and passed explicitly, so a jitted
    step receives them as arguments instead of baking them into the executable).
    """

    def __init__(self, spec: ModelSpec, arrays: Sequence[np.ndarray], dtype: Any) -> None:
        self.spec = spec
        self.layout = ParamLayout(spec)
        self.dtype = dtype
        flat_parts: list[np.ndarray] = []
        frozen: dict[str, Array] = {}
        for (layer_index, pspec), value in zip(spec.param_specs(), arrays, strict=True):
            a = np.asarray(value, dtype=dtype)
            if pspec.trainable:
                flat_parts.append(a.reshape(-1))
            else:
                frozen[f"{layer_index}.{pspec.name}"] = jnp.asarray(a)
        self.initial_flat = np.concatenate(flat_parts) if flat_parts else np.zeros(0, dtype=dtype)
        self.frozen = frozen
        self._tapped = {t.layer_index: t.tap_index for t in self.layout.tapped}
        self._impls = [_impl(layer) for layer in spec.layers]

    def tap_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        """Pre-activation shapes ``(B, *out)`` of the trainable tapped layers, in tap order."""
        shapes = self.spec.shapes
        return [(batch_size, *shapes[t.layer_index + 1]) for t in self.layout.tapped]

    def layer_params(self, flat: Array, frozen: Mapping[str, Array] | None = None) -> list[dict[str, Array]]:
        """Per-layer parameter dicts: static slices of ``flat`` plus the frozen arrays."""
        out: list[dict[str, Array]] = [{} for _ in self.spec.layers]
        for b in self.layout.blocks:
            out[b.layer_index][b.role] = flat[b.offset : b.stop].reshape(b.shape)
        for key, value in (self.frozen if frozen is None else frozen).items():
            layer_index, name = key.split(".", 1)
            out[int(layer_index)][name] = value
        return out

    def apply(self, flat: Array, x: Array, frozen: Mapping[str, Array] | None = None) -> Array:
        """Logits ``z`` of the batch ``x`` (``(B, *input_shape)``)."""
        return self.apply_tapped(flat, x, None, frozen)[0]

    def apply_tapped(
        self,
        flat: Array,
        x: Array,
        perturbations: Sequence[Array] | None,
        frozen: Mapping[str, Array] | None = None,
    ) -> tuple[Array, list[Array]]:
        """``(z, inputs)``: logits, and the input ``a`` of every trainable tapped layer.

        With ``perturbations`` (one per tapped layer, shaped like its pre-activation) each is
        added to that layer's ``s``; without, nothing is recorded and ``inputs`` is empty.
        """
        params = self.layer_params(flat, frozen)
        inputs: list[Array] = []
        h = x
        for i, (layer, impl) in enumerate(zip(self.spec.layers, self._impls, strict=True)):
            out = impl(layer, params[i], h)
            if perturbations is not None and i in self._tapped:
                inputs.append(h)
                out = out + perturbations[self._tapped[i]]
            h = out
        return h, inputs

    __call__ = apply
