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

from suites.layers.base import (
    Initializer,
    Layer,
    ParamSpec,
    Shape,
    array_init,
    constant_init,
    normal_init,
    uniform_init,
)
from suites.layers.composites import (
    LoRALinear,
    PatchEmbeddings,
    Residual,
    SelfAttention,
    Sequential,
    TextEncoder,
    TokenEmbeddings,
    TransformerBlock,
    VisionEncoder,
)
from suites.layers.model import (
    LayerNode,
    ModelSpec,
    ParamEntry,
    PretrainedLoader,
)
from suites.layers.parameter_free import (
    ACTIVATIONS,
    GELU,
    Activation,
    AvgPool2d,
    Flatten,
    GlobalAvgPool2d,
    MaxPool2d,
    Pool2d,
    ReLU,
    Reshape,
    Resize,
    Tanh,
)
from suites.layers.tapped import (
    Conv2d,
    Linear,
)
from suites.layers.untapped import (
    Embedding,
    GroupNorm,
    LayerNorm,
    Rosenbrock,
)

__all__ = [
    "ACTIVATIONS",
    "GELU",
    "Activation",
    "AvgPool2d",
    "Conv2d",
    "Embedding",
    "Flatten",
    "GlobalAvgPool2d",
    "GroupNorm",
    "Initializer",
    "Layer",
    "LayerNode",
    "LayerNorm",
    "Linear",
    "LoRALinear",
    "MaxPool2d",
    "ModelSpec",
    "ParamEntry",
    "ParamSpec",
    "PatchEmbeddings",
    "Pool2d",
    "PretrainedLoader",
    "ReLU",
    "Reshape",
    "Residual",
    "Resize",
    "Rosenbrock",
    "SelfAttention",
    "Sequential",
    "Shape",
    "Tanh",
    "TextEncoder",
    "TokenEmbeddings",
    "TransformerBlock",
    "VisionEncoder",
    "array_init",
    "constant_init",
    "normal_init",
    "uniform_init",
]
