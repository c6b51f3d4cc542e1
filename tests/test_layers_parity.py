"""Every layer kind of the vocabulary: torch vs JAX (float64), module vs functional, references.

Each case is a tiny random model exercising some layer kinds (nesting included). For each:
the two backends' logits, the gradient of a random linear functional of the logits with
respect to the flat parameters, and the taps (inputs ``a`` and pre-activation gradients ``e``)
agree to 1e-10; the torch ``nn.Module`` gives the functional model's logits and its trainable
``named_parameters()`` are the layout's paths in order. Independent references pin the
semantics: ``F.interpolate`` for ``Resize``, ``scaled_dot_product_attention`` for attention,
``W0 a + (alpha/r) B A a`` for LoRA, and the taps reconstruct the per-sample gradients of
Linear layers inside composites (sequence axis included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import backends.jax  # noqa: F401  (enables float64)
from backends.jax.models import JaxModel
from backends.torch import models as torch_models
from backends.torch.models import Taps, TorchModel, build_module
from suites.architectures import TransformerConfig, bert_encoder, resnet18_cifar, vit_encoder
from suites.layers import (
    GELU,
    AvgPool2d,
    Conv2d,
    Embedding,
    Flatten,
    GlobalAvgPool2d,
    GroupNorm,
    LayerNorm,
    Linear,
    LoRALinear,
    MaxPool2d,
    ModelSpec,
    ReLU,
    Residual,
    Resize,
    Rosenbrock,
    SelfAttention,
    Sequential,
    Tanh,
)

RTOL = 1e-10
CPU = torch.device("cpu")

TINY_TEXT = TransformerConfig(8, 2, 2, 16, 1e-12, vocab_size=20, max_positions=12, type_vocab_size=2)
TINY_VIT = TransformerConfig(8, 1, 2, 16, 1e-12, image_size=16, patch_size=8, num_channels=3)


def _images(shape: tuple[int, ...]) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda rng, n: rng.normal(size=(n, *shape))


def _tokens(rng: np.random.Generator, n: int) -> np.ndarray:
    ids = rng.integers(1, TINY_TEXT.vocab_size, size=(n, 6))
    lengths = rng.integers(2, 7, size=n)
    ids[np.arange(6)[None, :] >= lengths[:, None]] = 0  # right padding, as the tokenizer pads
    return ids


CASES: dict[str, tuple[ModelSpec, Callable[[np.random.Generator, int], np.ndarray]]] = {
    "pooling": (
        ModelSpec(
            (1, 6, 6),
            (
                Conv2d(1, 3, 3, padding=1),
                MaxPool2d(2),
                Conv2d(3, 4, 3, padding=1),
                AvgPool2d(3, stride=2, padding=1),
                Tanh(),
                GlobalAvgPool2d(),
                Linear(4, 3),
            ),
        ),
        _images((1, 6, 6)),
    ),
    "resnet": (
        ModelSpec(
            (3, 8, 8),
            (
                Conv2d(3, 4, 3, padding=1, bias=False),
                GroupNorm(2, 4),
                ReLU(),
                Residual(Sequential((Conv2d(4, 4, 3, padding=1), GroupNorm(2, 4), ReLU(), Conv2d(4, 4, 3, padding=1)))),
                ReLU(),
                Residual(
                    Sequential((Conv2d(4, 8, 3, stride=2, padding=1, bias=False), GroupNorm(4, 8))),
                    Sequential((Conv2d(4, 8, 1, stride=2, bias=False), GroupNorm(4, 8))),
                ),
                GlobalAvgPool2d(),
                Linear(8, 3),
            ),
        ),
        _images((3, 8, 8)),
    ),
    "layer_norm_gelu": (
        ModelSpec((5,), (Linear(5, 6), LayerNorm(6), GELU("none"), Linear(6, 4), GELU(), Linear(4, 3))),
        _images((5,)),
    ),
    "embedding": (
        ModelSpec((6,), (Embedding(TINY_TEXT.vocab_size, 4), Flatten(), Linear(24, 3))),
        _tokens,
    ),
    "text_encoder_lora": (
        ModelSpec((6,), (bert_encoder(TINY_TEXT, 2, ("query", "value"), rank=2, alpha=4.0), Linear(8, 3))),
        _tokens,
    ),
    "attention_all_lora": (
        ModelSpec(
            (4, 6),
            (
                SelfAttention(6, 2, *(LoRALinear(6, 6, rank=2, alpha=2.0) for _ in range(4))),
                LayerNorm(6),
                Flatten(),
                Linear(24, 3),
            ),
        ),
        _images((4, 6)),
    ),
    "vision_encoder_lora": (
        ModelSpec((3, 8, 8), (Resize(16), vit_encoder(TINY_VIT, ("query", "value"), rank=2), Linear(8, 3))),
        _images((3, 8, 8)),
    ),
    "rosenbrock": (ModelSpec((1,), (Rosenbrock(),)), _images((1,))),
}


def _arrays(spec: ModelSpec, rng: np.random.Generator) -> list[np.ndarray]:
    """Initial parameters plus noise, so zero-initialised LoRA B matrices carry gradient."""
    return [a + 0.3 * rng.normal(size=a.shape) for a in spec.init_params(0)]


def _torch_run(spec: ModelSpec, arrays: list[np.ndarray], x: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    fm = TorchModel(spec, arrays, torch.float64, CPU)
    flat = fm.initial_flat.clone().requires_grad_(True)
    xt = torch.as_tensor(x) if np.issubdtype(x.dtype, np.integer) else torch.as_tensor(x, dtype=torch.float64)
    taps = Taps()
    z = fm(flat, xt, taps)
    loss = (z * torch.as_tensor(w)).sum()
    grads = torch.autograd.grad(loss, [flat, *taps.perturbations])
    module = build_module(spec, arrays, torch.float64, CPU)
    with torch.no_grad():
        z_module = module(xt)
    return {
        "z": z.detach().numpy(),
        "grad": grads[0].numpy(),
        "a": [a.detach().numpy() for a in taps.inputs],
        "e": [g.numpy() for g in grads[1:]],
        "z_module": z_module.numpy(),
        "names": [n for n, p in module.named_parameters() if p.requires_grad],
        "model": fm,
    }


def _jax_run(spec: ModelSpec, arrays: list[np.ndarray], x: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    jm = JaxModel(spec, arrays, jnp.float64)
    perts = [jnp.zeros(s, dtype=jnp.float64) for s in jm.tap_shapes(x.shape[0])]
    xj = jnp.asarray(x)

    def f(flat: jax.Array, eps: list[jax.Array]) -> tuple[jax.Array, tuple[jax.Array, list[jax.Array]]]:
        z, inputs = jm.apply_tapped(flat, xj, eps)
        return jnp.sum(z * w), (z, inputs)

    # Jitted, as adapters' steps are: some primitives only fail to differentiate under tracing.
    grad_fn = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))
    (_, (z, inputs)), (g, e) = grad_fn(jnp.asarray(jm.initial_flat), perts)
    return {
        "z": np.asarray(z),
        "grad": np.asarray(g),
        "a": [np.asarray(a) for a in inputs],
        "e": [np.asarray(v) for v in e],
    }


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> dict[str, Any]:
    spec, inputs = CASES[request.param]
    rng = np.random.default_rng(5)
    arrays = _arrays(spec, rng)
    x = inputs(rng, 5)
    w = rng.normal(size=(5, *spec.output_shape))
    return {"name": request.param, "spec": spec, "arrays": arrays, "x": x,
            "torch": _torch_run(spec, arrays, x, w), "jax": _jax_run(spec, arrays, x, w)}  # fmt: skip


def _close(actual: np.ndarray, desired: np.ndarray, what: str) -> None:
    scale = max(float(np.max(np.abs(desired))) if desired.size else 0.0, 1.0)
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=1e-13 * scale, err_msg=what)


def test_torch_and_jax_agree_on_logits_gradients_and_taps(case: dict[str, Any]) -> None:
    t, j = case["torch"], case["jax"]
    assert np.all(np.isfinite(t["z"])) and np.any(t["grad"] != 0)
    _close(j["z"], t["z"], "logits")
    _close(j["grad"], t["grad"], "gradient")
    assert len(j["a"]) == len(t["a"]) == len(case["torch"]["model"].layout.tapped)
    for k, (aj, at, ej, et) in enumerate(zip(j["a"], t["a"], j["e"], t["e"], strict=True)):
        assert aj.shape == at.shape and ej.shape == et.shape, k
        _close(aj, at, f"tap input {k}")
        _close(ej, et, f"tap gradient {k}")


def test_module_view_matches_and_names_are_the_canonical_paths(case: dict[str, Any]) -> None:
    t = case["torch"]
    layout = t["model"].layout
    assert t["names"] == [b.name for b in layout.blocks] == case["spec"].param_names()
    _close(t["z_module"], t["z"], "module logits")


def test_tap_shapes_follow_the_layout(case: dict[str, Any]) -> None:
    layout = case["torch"]["model"].layout
    for tapped, a, e in zip(layout.tapped, case["torch"]["a"], case["torch"]["e"], strict=True):
        assert a.shape[1:] == tapped.input_shape, tapped.path
        assert e.shape[1:] == tapped.output_shape, tapped.path


def test_taps_reconstruct_linear_gradients_inside_composites(case: dict[str, Any]) -> None:
    """For every tapped Linear (LoRA matrices, projections, heads; sequences summed over
    positions) the gradient block is ``sum_n sum_t e_nt a_nt^T`` (and ``sum e`` for the bias)."""
    t = case["torch"]
    for tapped, a, e in zip(t["model"].layout.tapped, t["a"], t["e"], strict=True):
        if tapped.kind != "linear":
            continue
        a2, e2 = a.reshape(-1, a.shape[-1]), e.reshape(-1, e.shape[-1])
        w = tapped.weight
        _close(t["grad"][w.offset : w.stop].reshape(w.shape), e2.T @ a2, f"{tapped.path} weight")
        if tapped.bias is not None:
            _close(t["grad"][tapped.bias.offset : tapped.bias.stop], e2.sum(0), f"{tapped.path} bias")


# --------------------------------------------------------------------------- independent references


def test_resize_is_torch_bilinear_interpolation() -> None:
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(2, 3, 5, 7)))
    layer = Resize(13)
    rh = torch.as_tensor(layer.matrix(5))
    rw = torch.as_tensor(layer.matrix(7))
    ref = F.interpolate(x, size=(13, 13), mode="bilinear", align_corners=False)
    torch.testing.assert_close(rh @ x @ rw.T, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.matrix(5).sum(1), 1.0)


def test_attention_matches_scaled_dot_product_attention_with_padding_mask() -> None:
    rng = np.random.default_rng(1)
    heads, dim, T = 2, 6, 5
    spec = ModelSpec((T, dim), (SelfAttention(dim, heads, *(Linear(dim, dim) for _ in range(4))),))
    arrays = spec.init_params(0)
    fm = TorchModel(spec, arrays, torch.float64, CPU)
    h = torch.as_tensor(rng.normal(size=(3, T, dim)))
    mask = torch.as_tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    params = fm.layer_params(fm.initial_flat)[0]

    def proj(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.linear(t, params[f"{name}.weight"], params[f"{name}.bias"])

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(3, T, heads, dim // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        split(proj("query", h)), split(proj("key", h)), split(proj("value", h)), attn_mask=mask[:, None, None, :]
    )
    ref = proj("output", out.transpose(1, 2).reshape(3, T, dim))
    node = fm._roots[0]
    ours = fm._run(node, fm._node_params(fm.initial_flat), h, None, {"mask": mask})
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_lora_starts_at_the_base_layer_and_adds_the_scaled_low_rank_update() -> None:
    rng = np.random.default_rng(2)
    layer = LoRALinear(5, 4, rank=2, alpha=6.0)
    spec = ModelSpec((5,), (layer,))
    arrays = spec.init_params(0)
    names = [e.path for e in spec.param_entries()]
    assert names == ["0.base.weight", "0.base.bias", "0.lora_A.weight", "0.lora_B.weight"]
    assert spec.param_names() == ["0.lora_A.weight", "0.lora_B.weight"]
    assert np.all(arrays[3] == 0)  # B = 0: the initial model is the pretrained one
    x = rng.normal(size=(3, 5))
    W0, b0, A, _ = arrays
    fm = TorchModel(spec, arrays, torch.float64, CPU)
    np.testing.assert_allclose(fm(fm.initial_flat, torch.as_tensor(x)).numpy(), x @ W0.T + b0, rtol=1e-12)
    B = rng.normal(size=(4, 2))
    flat = torch.as_tensor(np.concatenate([A.ravel(), B.ravel()]))
    np.testing.assert_allclose(fm(flat, torch.as_tensor(x)).numpy(), x @ W0.T + b0 + 3.0 * (x @ A.T) @ B.T, rtol=1e-12)


def test_frozen_parameters_stay_out_of_the_flat_vector_and_the_gradient() -> None:
    spec = CASES["text_encoder_lora"][0]
    entries = spec.param_entries()
    trainable = [e for e in entries if e.spec.trainable]
    assert all(("lora_" in e.path) or e.path.startswith("1.") for e in trainable)
    assert spec.num_params() == sum(e.spec.size for e in trainable) < spec.num_params(trainable_only=False)
    module = build_module(spec, spec.init_params(0), torch.float64, CPU)
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    assert "0.embeddings.word.weight" in frozen and "0.blocks.0.attention.query.base.weight" in frozen


def test_taps_out_of_execution_order_are_refused() -> None:
    """A composite that runs its tapped children in another order than the layout is an error."""

    def backwards(layer: Any, params: Any, x: torch.Tensor, call: Any, **ctx: Any) -> torch.Tensor:
        return call("0", call("1", x))

    spec = ModelSpec((3,), (_Swapped((Linear(3, 3), Linear(3, 3))),))
    torch_models.register_composite("swapped_test", backwards)
    try:
        fm = TorchModel(spec, spec.init_params(0), torch.float64, CPU)
        x = torch.ones(2, 3, dtype=torch.float64)
        fm(fm.initial_flat, x)  # no taps: any order is fine
        with pytest.raises(RuntimeError, match="ran as tap 0, layout says 1"):
            fm(fm.initial_flat, x, Taps())
    finally:
        torch_models._IMPLS.pop("swapped_test")


class _Swapped(Sequential):
    kind = "swapped_test"


def test_resnet18_has_the_reference_parameter_count_and_path_names() -> None:
    spec = ModelSpec((3, 32, 32), resnet18_cifar(10))
    # torchvision's CIFAR ResNet-18 has 11,173,962 parameters with BatchNorm affine terms; GroupNorm has
    # the same affine parameters, so the count is the same.
    assert spec.num_params() == 11_173_962
    assert spec.output_shape == (10,)
    assert "3.body.0.weight" in spec.param_names()
    assert [p for p in spec.param_names() if ".shortcut.0.weight" in p] == [
        f"{i}.shortcut.0.weight" for i in (7, 11, 15)
    ]
