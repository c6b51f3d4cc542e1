"""GPU-size CIFAR suites: ``cifar10-resnet18`` and ``cifar100-vit-lora``.

Both read the official "CIFAR python version" files (Krizhevsky 2009) from the data directory
(``suites/datadir.py``), never downloading them::

    <data dir>/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch
    <data dir>/cifar-100-python/train, test

(what ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` from
www.cs.toronto.edu/~kriz/cifar.html unpack to). The official test split is the validation
split. No data augmentation: batches are a pure function of (seed, step), as in every suite.

``cifar10-resnet18`` (AdamQLR's CIFAR-10 task; FNGD's ResNet-18): ResNet-18 for 32x32 inputs
(3x3 stem, no max-pool, 4 stages of 2 basic blocks, 11.2M parameters), images standardized
per channel with the training set's mean and std, batch 128. **BatchNorm is replaced by
GroupNorm** (``GroupNorm(min(32, C), C)``): BatchNorm couples the samples of a batch, so the
"per-sample gradients" of EF, iEF, FNGD and the Gram trick would not be gradients of per-sample
losses; GroupNorm normalises each sample on its own (Wu & He 2018), the substitution Opacus
makes for per-sample-gradient training (``opacus.validators.ModuleValidator.fix``).

``cifar100-vit-lora`` (the iEF paper's vision PEFT task, Wu et al. 2024, App. H.1): the
pretrained ViT-B/16 ``google/vit-base-patch16-224`` (86M parameters), frozen, LoRA r=8 (alpha
8) on query and value in all 12 blocks, a new trainable 768-100 head on the final-normed class
token (the pretrained 1000-way ImageNet head is not used), CIFAR-100's 100 fine labels, batch
32, 5 epochs. Images are scaled as the model's image processor does (``(x/255 - 0.5) / 0.5``)
and upsampled to 224x224 bilinearly inside the model (layer ``Resize``), so the stored arrays
stay 32x32. The weights are the user's copy of the Hugging Face files::

    <data dir>/vit-base-patch16-224/config.json
    <data dir>/vit-base-patch16-224/model.safetensors

(``huggingface.co/google/vit-base-patch16-224``; the names of ``ViTForImageClassification`` or
``ViTModel`` checkpoints, with or without the ``vit.`` prefix, are accepted).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from suites.architectures import TransformerConfig, resnet18_cifar, vit_encoder, vit_weights
from suites.datadir import data_dir
from suites.layers import Linear, ModelSpec, Resize
from suites.loaders import cifar_images, read_cifar_batch, read_json, read_safetensors
from suites.registry import register
from suites.spec import Budget, DataFile, Dataset, DataUnavailableError, Suite

CIFAR10 = "cifar-10-batches-py"
CIFAR100 = "cifar-100-python"
CIFAR10_FILES: tuple[DataFile, ...] = tuple(
    DataFile((f"{CIFAR10}/{name}",), f"CIFAR-10 {kind}")
    for name, kind in [*((f"data_batch_{i}", f"training batch {i}") for i in range(1, 6)), ("test_batch", "test batch")]
)
CIFAR100_FILES: tuple[DataFile, ...] = (
    DataFile((f"{CIFAR100}/train",), "CIFAR-100 training set"),
    DataFile((f"{CIFAR100}/test",), "CIFAR-100 test set"),
)
VIT_FOLDER = "vit-base-patch16-224"
#: google/vit-base-patch16-224's config.json.
VIT_B16 = TransformerConfig(
    hidden_size=768,
    num_layers=12,
    num_heads=12,
    intermediate_size=3072,
    layer_norm_eps=1e-12,
    image_size=224,
    patch_size=16,
    num_channels=3,
)
LORA_TARGETS: tuple[str, ...] = ("query", "value")


def _require(files: tuple[DataFile, ...], base: Path) -> list[Path]:
    paths = [f.find(base) for f in files]
    missing = [f.describe() for f, p in zip(files, paths, strict=True) if p is None]
    if missing:
        raise DataUnavailableError(f"missing {', '.join(missing)} under {base}")
    return [p for p in paths if p is not None]


def _standardize_channels(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel standardization with the training set's statistics, float32."""
    x = train.astype(np.float32) / 255.0
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64).reshape(1, 3, 1, 1)
    std = x.std(axis=(0, 2, 3), dtype=np.float64).reshape(1, 3, 1, 1)
    scale = lambda a: ((a.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)  # noqa: E731
    return scale(train), scale(val)


def load_cifar10(root: Path | None = None) -> Dataset:
    """CIFAR-10's five training batches and test batch, standardized per channel."""
    paths = _require(CIFAR10_FILES, data_dir(root))
    parts = [cifar_images(read_cifar_batch(p), b"labels") for p in paths]
    x_train = np.concatenate([x for x, _ in parts[:5]])
    y_train = np.concatenate([y for _, y in parts[:5]])
    x_tr, x_va = _standardize_channels(x_train, parts[5][0])
    return Dataset(x_tr, y_train, x_va, parts[5][1])


def load_cifar100(root: Path | None = None) -> Dataset:
    """CIFAR-100 (fine labels) scaled like the ViT image processor: ``(x/255 - 0.5)/0.5``."""
    train, test = (cifar_images(read_cifar_batch(p), b"fine_labels") for p in _require(CIFAR100_FILES, data_dir(root)))

    def scale(a: np.ndarray) -> np.ndarray:
        return ((a.astype(np.float32) / 255.0 - 0.5) / 0.5).astype(np.float32)

    return Dataset(scale(train[0]), train[1], scale(test[0]), test[1])


def vit_pretrained(
    config: TransformerConfig, folder: str = VIT_FOLDER, root: Path | None = None
) -> Mapping[str, np.ndarray]:
    """The user's ViT checkpoint mapped to the spec's paths (encoder at ``1``)."""
    config_path, weights_path = _require(vit_files(folder), data_dir(root))
    found = TransformerConfig.from_hf(read_json(config_path))
    expected = (config.hidden_size, config.num_layers, config.num_heads, config.intermediate_size,
                config.image_size, config.patch_size, config.num_channels)  # fmt: skip
    got = (found.hidden_size, found.num_layers, found.num_heads, found.intermediate_size,
           found.image_size, found.patch_size, found.num_channels)  # fmt: skip
    if got != expected:
        raise DataUnavailableError(f"{config_path} describes a different ViT {got}, the suite needs {expected}")
    try:
        return vit_weights(read_safetensors(weights_path), "1", config.num_layers, LORA_TARGETS)
    except KeyError as exc:
        raise DataUnavailableError(f"{weights_path} lacks the ViT parameter {exc}") from None


def vit_lora_spec(
    config: TransformerConfig, num_classes: int, folder: str = VIT_FOLDER, image_size: int = 32
) -> ModelSpec:
    """``Resize -> ViT encoder (frozen, LoRA on q, v) -> Linear head`` for ``image_size`` images."""
    return ModelSpec(
        (config.num_channels, image_size, image_size),
        (
            Resize(config.image_size),
            vit_encoder(config, LORA_TARGETS, rank=8, alpha=8.0),
            Linear(config.hidden_size, num_classes),
        ),
        pretrained=functools.partial(vit_pretrained, config, folder),
    )


CIFAR10_RESNET18 = register(
    Suite(
        name="cifar10-resnet18",
        version=1,
        description=(
            "CIFAR-10 (50,000 / 10,000 32x32 images, official split), per-channel standardized, no augmentation; "
            "ResNet-18 (CIFAR stem) with GroupNorm for BatchNorm, softmax cross-entropy, batch 128, 20 epochs."
        ),
        paper="AdamQLR (CIFAR-10 ResNet-18); FNGD (Ou et al. 2024, ResNet-18)",
        source="official CIFAR-10 python batches in the data directory (www.cs.toronto.edu/~kriz/cifar.html)",
        model=ModelSpec((3, 32, 32), resnet18_cifar(10)),
        likelihood="softmax_ce",
        batch_size=128,
        budget=Budget(steps=7800, time_s=1800.0),
        eval_every=390,
        load=functools.partial(load_cifar10, None),
        target=None,
        size="gpu",
        data_files=CIFAR10_FILES,
    )
)


def vit_files(folder: str = VIT_FOLDER) -> tuple[DataFile, ...]:
    return (
        DataFile((f"{folder}/config.json",), f"{folder} config (Hugging Face config.json)"),
        DataFile((f"{folder}/model.safetensors",), f"{folder} weights (Hugging Face model.safetensors)"),
    )


def cifar100_vit_lora(config: TransformerConfig = VIT_B16, folder: str = VIT_FOLDER, **changes: object) -> Suite:
    """The CIFAR-100 ViT-LoRA suite for a ViT of shape ``config`` stored under ``folder``."""
    suite = Suite(
        name="cifar100-vit-lora",
        version=1,
        description=(
            "CIFAR-100 (50,000 / 10,000 images, 100 fine labels) upsampled to 224; pretrained ViT-B/16 "
            "(google/vit-base-patch16-224, frozen) with LoRA r=8 on q, v and a 768-100 head; batch 32, 5 epochs."
        ),
        paper="iEF (Wu et al. 2024): CIFAR-100 + ViT-B/16 + LoRA",
        source="official CIFAR-100 python files and HF google/vit-base-patch16-224 in the data directory",
        model=vit_lora_spec(config, 100, folder),
        likelihood="softmax_ce",
        batch_size=32,
        budget=Budget(steps=7800, time_s=3600.0),
        eval_every=780,
        load=functools.partial(load_cifar100, None),
        target=None,
        size="gpu",
        data_files=CIFAR100_FILES + vit_files(folder),
        packages=("safetensors",),
    )
    return suite.replace(**changes) if changes else suite


CIFAR100_VIT_LORA = register(cifar100_vit_lora())
