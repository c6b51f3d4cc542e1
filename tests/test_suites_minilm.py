"""``minilm-lora``: the real pretrained MiniLM in our layer tree, the tokens, the LoRA layout."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from backends.layout import ParamLayout
from backends.torch.models import TorchModel
from suites import get_suite, minilm
from suites.layers import ModelSpec
from suites.loaders import read_safetensors


def test_pretrained_arrays_are_the_checkpoints() -> None:
    spec = get_suite("minilm-lora").model
    values = dict(zip(spec.param_names(trainable_only=False), spec.init_params(0), strict=True))
    ckpt = read_safetensors(minilm.model_dir() / "model.safetensors")
    pairs = {
        "0.embeddings.word.weight": "embeddings.word_embeddings.weight",
        "0.blocks.1.attention.value.base.weight": "encoder.layer.1.attention.self.value.weight",
        "0.blocks.1.attention.key.bias": "encoder.layer.1.attention.self.key.bias",
        "0.blocks.0.attention.output.weight": "encoder.layer.0.attention.output.dense.weight",
        "0.blocks.0.norm1.weight": "encoder.layer.0.attention.output.LayerNorm.weight",
        "0.blocks.1.fc2.weight": "encoder.layer.1.output.dense.weight",
    }
    for ours, theirs in pairs.items():
        np.testing.assert_array_equal(values[ours], ckpt[theirs].astype(np.float64), err_msg=ours)
    assert np.all(values["0.blocks.0.attention.query.lora_B.weight"] == 0)


def test_lora_layout_is_all_tapped_with_sequence_taps() -> None:
    spec = get_suite("minilm-lora").model
    layout = ParamLayout(spec)
    assert spec.param_names() == [
        *(f"0.blocks.{i}.attention.{p}.lora_{m}.weight" for i in range(2) for p in ("query", "value") for m in "AB"),
        "1.weight",
        "1.bias",
    ]
    assert spec.num_params() == 2 * 2 * (8 * 384 + 384 * 8) + 384 * 2 + 2 == 25_346
    assert layout.all_tapped  # sample-space methods use the taps, never a dense J
    shapes = [(t.path.removeprefix("0."), t.input_shape, t.output_shape) for t in layout.tapped]
    assert shapes[:2] == [
        ("blocks.0.attention.query.lora_A", (32, 384), (32, 8)),
        ("blocks.0.attention.query.lora_B", (32, 8), (32, 384)),
    ]
    assert layout.tapped[-1].input_shape == (384,) and layout.tapped[-1].positions == 1
    assert layout.tapped[0].positions == 32


def test_tokens_are_wordpiece_ids_with_cls_sep_and_right_padding() -> None:
    data = get_suite("minilm-lora").data
    ids = data.x_train
    assert ids.dtype == np.int64 and ids.shape == (4000, 32)
    assert np.all(ids[:, 0] == 101)  # [CLS]
    lengths = (ids != 0).sum(axis=1)
    assert np.all(ids[np.arange(len(ids)), lengths - 1] == 102)  # [SEP] ends every sequence
    assert np.all((ids != 0).cumprod(axis=1).sum(axis=1) == lengths)  # padding only on the right
    assert abs(data.y_train.mean() - 0.65) < 1e-12 and abs(data.y_val.mean() - 0.658) < 1e-12
    text = "This coffee is great."
    np.testing.assert_array_equal(minilm.tokenize([text], 8)[0], [101, 2023, 4157, 2003, 2307, 1012, 102, 0])


def test_encoder_matches_transformers_bert_with_mean_pooling() -> None:
    """An established implementation as the reference: HF ``BertModel`` on the same folder."""
    try:
        from transformers import BertModel
    except Exception as exc:  # transformers is optional; a broken torchvision breaks its import
        pytest.skip(f"transformers unavailable: {exc}")
    layers = 2
    encoder = minilm.model_spec(layers, 32).layers[0]
    spec = ModelSpec((32,), (encoder,), pretrained=functools.partial(minilm.pretrained, layers))
    fm = TorchModel(spec, spec.init_params(0), torch.float64, torch.device("cpu"))
    ids = torch.as_tensor(get_suite("minilm-lora").data.x_val[:8])
    ours = fm(fm.initial_flat, ids)
    hf = BertModel.from_pretrained(str(minilm.model_dir()), num_hidden_layers=layers, add_pooling_layer=False)
    hf = hf.double().eval()
    with torch.no_grad():
        mask = (ids != 0).long()
        hidden = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        ref = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
