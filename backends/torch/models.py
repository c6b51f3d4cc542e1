"""Builds a suite's model spec into PyTorch: a plain ``nn.Module`` and a functional forward.

Two views of the same model, tested to agree:

* :func:`build_module` gives an ``nn.Sequential`` of standard modules holding given parameter
  values, so external tools (curvlinops, BackPACK, ASDL) can consume it. Its trainable
  ``named_parameters()`` are the canonical flat order.
* :class:`TorchModel` runs the forward pass functionally from a flat parameter vector (cheaper
  than ``functional_call`` on the hot path, and differentiable with ``torch.func``). It can
  record *taps*: the input ``a`` of every trainable tapped layer, and a zero perturbation
  added to its pre-activation ``s`` whose gradient is ``e = dl/ds``.

Every layer kind of ``suites.layers`` is implemented once here via :func:`register_layer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backends.layout import ParamLayout
from suites.layers import Activation, Conv2d, Flatten, Layer, Linear, ModelSpec, Reshape


@dataclass
class Taps:
    """Per-forward record of tapped layers, in ``ParamLayout.tapped`` order.

    ``inputs[k]`` is the input of tapped layer ``k``; ``perturbations[k]`` (if ``perturb``) is
    a zero tensor added to its pre-activation, so the gradient of a loss with respect to it is
    that layer's pre-activation gradient.
    """

    perturb: bool = True
    inputs: list[Tensor] = field(default_factory=list)
    perturbations: list[Tensor] = field(default_factory=list)

    def record(self, a: Tensor, s: Tensor) -> Tensor:
        self.inputs.append(a)
        if not self.perturb:
            return s
        eps = torch.zeros_like(s, requires_grad=True)
        self.perturbations.append(eps)
        return s + eps


@dataclass(frozen=True)
class LayerImpl:
    module: Callable[[Any], nn.Module]
    forward: Callable[[Any, dict[str, Tensor], Tensor], Tensor]


_IMPLS: dict[str, LayerImpl] = {}


def register_layer(
    kind: str,
    module: Callable[[Any], nn.Module],
    forward: Callable[[Any, dict[str, Tensor], Tensor], Tensor],
) -> None:
    """Implement layer ``kind``: an ``nn.Module`` factory and a functional forward.

    ``forward(layer, params, x)`` gets the layer's parameters by name (trainable and frozen) and
    the batched input. Tapped layers return the pre-activation ``s``; the model adds the tap.
    """
    _IMPLS[kind] = LayerImpl(module, forward)


def _impl(layer: Layer) -> LayerImpl:
    try:
        return _IMPLS[layer.kind]
    except KeyError:
        raise NotImplementedError(f"layer kind {layer.kind!r} has no torch implementation") from None


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": lambda x: F.gelu(x, approximate="tanh"),
}
_ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": lambda: nn.GELU(approximate="tanh"),
}


class _Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


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

# Keep the imported layer classes referenced: they document which kinds are implemented here.
_IMPLEMENTED = (Linear, Conv2d, Activation, Flatten, Reshape)


def build_module(spec: ModelSpec, arrays: Sequence[np.ndarray], dtype: torch.dtype, device: torch.device) -> nn.Module:
    """An ``nn.Sequential`` holding ``arrays`` (all parameters, canonical order)."""
    modules = [_impl(layer).module(layer) for layer in spec.layers]
    model = nn.Sequential(*modules).to(device=device, dtype=dtype)
    it = iter(zip(spec.param_specs(), arrays, strict=True))
    for (layer_index, pspec), value in it:
        param = getattr(modules[layer_index], pspec.name)
        with torch.no_grad():
            param.copy_(torch.as_tensor(value, dtype=dtype, device=device))
        param.requires_grad_(pspec.trainable)
    return model


class TorchModel:
    """Functional forward of a model spec from a flat trainable-parameter vector."""

    def __init__(self, spec: ModelSpec, arrays: Sequence[np.ndarray], dtype: torch.dtype, device: torch.device) -> None:
        self.spec = spec
        self.layout = ParamLayout(spec)
        self.dtype = dtype
        self.device = device
        self._frozen: dict[tuple[int, str], Tensor] = {}
        flat_parts = []
        for (layer_index, pspec), value in zip(spec.param_specs(), arrays, strict=True):
            t = torch.as_tensor(np.asarray(value), dtype=dtype, device=device)
            if pspec.trainable:
                flat_parts.append(t.reshape(-1))
            else:
                self._frozen[(layer_index, pspec.name)] = t
        self.initial_flat = torch.cat(flat_parts) if flat_parts else torch.zeros(0, dtype=dtype, device=device)
        self._tapped_layers = {t.layer_index for t in self.layout.tapped}
        self._block_sizes = [b.size for b in self.layout.blocks]
        self._impls = [_impl(layer) for layer in spec.layers]

    def layer_params(self, flat: Tensor) -> list[dict[str, Tensor]]:
        """Per-layer parameter dicts (views into ``flat`` plus frozen tensors).

        ``torch.split`` rather than slicing: its backward concatenates the block gradients
        once, where each slice's backward would zero-fill a parameter-sized buffer.
        """
        out: list[dict[str, Tensor]] = [{} for _ in self.spec.layers]
        parts = torch.split(flat, self._block_sizes) if self._block_sizes else ()
        for b, part in zip(self.layout.blocks, parts, strict=True):
            out[b.layer_index][b.role] = part.view(b.shape)
        for (layer_index, name), t in self._frozen.items():
            out[layer_index][name] = t
        return out

    def forward(self, flat: Tensor, x: Tensor, taps: Taps | None = None) -> Tensor:
        h = x
        params = self.layer_params(flat)
        for i, (layer, impl) in enumerate(zip(self.spec.layers, self._impls, strict=True)):
            out = impl.forward(layer, params[i], h)
            if taps is not None and i in self._tapped_layers:
                out = taps.record(h, out)
            h = out
        return h

    __call__ = forward
