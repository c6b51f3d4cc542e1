"""The data directory, the GPU-size suites' loaders (on fixture files in the real formats),
``ngbench data check``, the refusal of suites whose files are missing, and the array cache."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from backends import jax as jax_backend
from backends import torch as torch_backend
from harness.cli import app
from suites import cache, cifar, fashion_mnist, get_suite
from suites.architectures import TransformerConfig
from suites.datadir import ENV_VAR, data_dir, set_data_dir
from suites.loaders import read_cifar_batch, read_idx, write_cifar_batch, write_idx
from suites.spec import DataUnavailableError

RNG = np.random.default_rng(11)


@pytest.fixture
def datadir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    return tmp_path


def _write_fashion(root: Path, n_train: int = 12, n_val: int = 6, gz: bool = True) -> dict[str, np.ndarray]:
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, size=(n_train, 28, 28)),
        "train-labels-idx1-ubyte": RNG.integers(0, 10, size=n_train),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, size=(n_val, 28, 28)),
        "t10k-labels-idx1-ubyte": RNG.integers(0, 10, size=n_val),
    }
    for name, a in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), a)
    return arrays


def _write_cifar10(root: Path, per_batch: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = []
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        images, labels = RNG.integers(0, 256, size=(per_batch, 3, 32, 32)), RNG.integers(0, 10, size=per_batch)
        write_cifar_batch(folder / name, images, {"labels": labels})
        out.append((images, labels))
    return out


def _write_cifar100(root: Path, n: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name in ("train", "test"):
        images, fine = RNG.integers(0, 256, size=(n, 3, 32, 32)), RNG.integers(0, 100, size=n)
        write_cifar_batch(folder / name, images, {"fine_labels": fine, "coarse_labels": fine // 5})
        out[name] = (images, fine)
    return out


TINY_VIT = TransformerConfig(8, 2, 2, 16, 1e-12, image_size=32, patch_size=16, num_channels=3)


def _write_vit(root: Path, cfg: TransformerConfig, folder: str, prefix: str = "vit.") -> dict[str, np.ndarray]:
    """A random checkpoint in HF ViTForImageClassification's naming scheme."""
    from safetensors.numpy import save_file

    d, f, n = cfg.hidden_size, cfg.intermediate_size, (cfg.image_size // cfg.patch_size) ** 2
    w: dict[str, np.ndarray] = {
        "embeddings.cls_token": (1, 1, d),
        "embeddings.position_embeddings": (1, n + 1, d),
        "embeddings.patch_embeddings.projection.weight": (d, cfg.num_channels, cfg.patch_size, cfg.patch_size),
        "embeddings.patch_embeddings.projection.bias": (d,),
        "layernorm.weight": (d,),
        "layernorm.bias": (d,),
    }  # type: ignore[assignment]
    for i in range(cfg.num_layers):
        for name, shape in {
            "attention.attention.query": (d, d), "attention.attention.key": (d, d),
            "attention.attention.value": (d, d), "attention.output.dense": (d, d),
            "intermediate.dense": (f, d), "output.dense": (d, f),
            "layernorm_before": (d,), "layernorm_after": (d,),
        }.items():  # fmt: skip
            w[f"encoder.layer.{i}.{name}.weight"] = shape  # type: ignore[assignment]
            w[f"encoder.layer.{i}.{name}.bias"] = (shape[0],)  # type: ignore[assignment]
    arrays = {prefix + k: RNG.normal(scale=0.2, size=s).astype(np.float32) for k, s in w.items()}
    arrays["classifier.weight"] = RNG.normal(size=(1000, d)).astype(np.float32)  # dropped by the loader
    (root / folder).mkdir(parents=True)
    save_file(arrays, str(root / folder / "model.safetensors"))
    config = {"hidden_size": d, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
              "intermediate_size": f, "image_size": cfg.image_size, "patch_size": cfg.patch_size,
              "num_channels": cfg.num_channels, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}  # fmt: skip
    (root / folder / "config.json").write_text(json.dumps(config))
    return arrays


# --------------------------------------------------------------------------- data directory


def test_data_dir_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert data_dir() == Path("~/ngbench-data").expanduser()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert set_data_dir(tmp_path / "cli") == (tmp_path / "cli").resolve()
    assert data_dir() == (tmp_path / "cli").resolve()


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    a = RNG.integers(0, 256, size=(5, 4, 3))
    path = tmp_path / ("x.idx" + (".gz" if gz else ""))
    write_idx(path, a)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (5, 4, 3)
    np.testing.assert_array_equal(out, a)


def test_malformed_idx_and_cifar_files_are_refused_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(DataUnavailableError, match="not an IDX file"):
        read_idx(bad)
    truncated = tmp_path / "short"
    truncated.write_bytes(bytes([0, 0, 8, 1]) + np.asarray([10], dtype=">u4").tobytes() + b"\x00" * 3)
    with pytest.raises(DataUnavailableError, match="declares shape"):
        read_idx(truncated)
    with pytest.raises(DataUnavailableError, match="not a CIFAR python batch"):
        read_cifar_batch(bad)


def test_cifar_batches_cannot_run_code(tmp_path: Path) -> None:
    """A pickle naming anything but numpy arrays and containers is refused, not executed."""

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataUnavailableError, match=r"refusing to load (__builtin__|builtins)\.print"):
        read_cifar_batch(path)


# --------------------------------------------------------------------------- GPU-size loaders


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_loader_reads_idx_files(datadir: Path, gz: bool) -> None:
    arrays = _write_fashion(datadir, gz=gz)
    d = fashion_mnist.load_fashion_mnist()
    assert d.x_train.shape == (12, 784) and d.x_val.shape == (6, 784) and d.x_train.dtype == np.float32
    np.testing.assert_allclose(d.x_train[3], arrays["train-images-idx3-ubyte"][3].ravel() / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_val, arrays["t10k-labels-idx1-ubyte"])
    assert d.y_train.dtype == np.int64


def test_cifar10_loader_reads_python_batches_and_standardizes(datadir: Path) -> None:
    parts = _write_cifar10(datadir)
    d = cifar.load_cifar10()
    assert d.x_train.shape == (15, 3, 32, 32) and d.x_val.shape == (3, 3, 32, 32) and d.x_train.dtype == np.float32
    np.testing.assert_array_equal(d.y_train, np.concatenate([y for _, y in parts[:5]]))
    np.testing.assert_array_equal(d.y_val, parts[5][1])
    np.testing.assert_allclose(d.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    x_all = np.concatenate([p[0] for p in parts[:5]]) / 255.0
    mean, std = x_all.mean(axis=(0, 2, 3))[:, None, None], x_all.std(axis=(0, 2, 3))[:, None, None]
    np.testing.assert_allclose(d.x_train[4], (x_all[4] - mean) / std, rtol=1e-5, atol=1e-5)


def test_cifar_rows_are_channel_major(tmp_path: Path) -> None:
    """The 3,072 bytes of a row are the red, green and blue 32x32 planes in turn."""
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    row[1024 + 32 * 2 + 5] = 99  # green, row 2, column 5
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": row[None, :], b"labels": [7]}, protocol=2))
    from suites.loaders import cifar_images

    images, labels = cifar_images(read_cifar_batch(path), b"labels")
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [7]
    assert images[0, 0, 0, 0] == 10 and images[0, 2, 31, 31] == 30 and images[0, 1, 2, 5] == 99


def test_cifar100_loader_uses_fine_labels_and_vit_scaling(datadir: Path) -> None:
    written = _write_cifar100(datadir)
    d = cifar.load_cifar100()
    np.testing.assert_array_equal(d.y_train, written["train"][1])
    np.testing.assert_allclose(d.x_val, (written["test"][0] / 255.0 - 0.5) / 0.5, rtol=1e-6, atol=1e-6)


def test_vit_checkpoint_is_mapped_onto_the_spec_and_both_backends_agree(datadir: Path) -> None:
    _write_cifar100(datadir, n=8)
    arrays = _write_vit(datadir, TINY_VIT, "vit-tiny")
    spec = cifar.vit_lora_spec(TINY_VIT, 100, folder="vit-tiny")
    params = dict(zip(spec.param_names(trainable_only=False), spec.init_params(0), strict=True))
    np.testing.assert_array_equal(
        params["1.blocks.1.attention.query.base.weight"], arrays["vit.encoder.layer.1.attention.attention.query.weight"]
    )
    np.testing.assert_array_equal(
        params["1.blocks.0.attention.key.weight"], arrays["vit.encoder.layer.0.attention.attention.key.weight"]
    )
    np.testing.assert_array_equal(
        params["1.embeddings.projection.weight"], arrays["vit.embeddings.patch_embeddings.projection.weight"]
    )
    np.testing.assert_array_equal(params["1.norm.bias"], arrays["vit.layernorm.bias"])
    assert spec.param_names() == [
        *(f"1.blocks.{i}.attention.{p}.lora_{m}.weight" for i in range(2) for p in ("query", "value") for m in "AB"),
        "2.weight",
        "2.bias",
    ]
    suite = cifar.cifar100_vit_lora(TINY_VIT, "vit-tiny", batch_size=4)
    assert suite.model == spec
    tp = torch_backend.build_problem(suite, dtype="float64")
    jp = jax_backend.build_problem(suite, dtype="float64")
    np.testing.assert_array_equal(jp.to_numpy(jp.params0), tp.to_numpy(tp.params0))
    t_loss = float(tp.oracle(tp.params0, tp.device_batch(0)).loss())
    j_loss = float(jp.jit(lambda p, b: jp.oracle(p, b).loss())(jp.params0, jp.device_batch(0)))
    np.testing.assert_allclose(j_loss, t_loss, rtol=1e-10)
    assert np.isfinite(t_loss)


def test_vit_checkpoint_of_another_shape_is_refused(datadir: Path) -> None:
    _write_vit(datadir, TINY_VIT, "vit-tiny")
    other = TransformerConfig(8, 3, 2, 16, 1e-12, image_size=32, patch_size=16, num_channels=3)
    with pytest.raises(DataUnavailableError, match="describes a different ViT"):
        cifar.vit_lora_spec(other, 100, folder="vit-tiny").init_params(0)


def test_gpu_suites_build_on_fixture_files(datadir: Path) -> None:
    _write_fashion(datadir)
    _write_cifar10(datadir)
    for name in ("fashion-mnist-mlp", "cifar10-resnet18"):
        suite = get_suite(name).replace(batch_size=4)  # a fresh object: data read from this data directory
        p = torch_backend.build_problem(suite, dtype="float32")
        loss = float(p.oracle(p.params0, p.device_batch(0)).loss())
        assert np.isfinite(loss) and abs(loss - np.log(10)) < 1.5, name
    fm = get_suite("fashion-mnist-mlp").replace(batch_size=4)
    jp, tp = jax_backend.build_problem(fm), torch_backend.build_problem(fm)
    np.testing.assert_allclose(jp.evaluate(jp.params0)["val_loss"], tp.evaluate(tp.params0)["val_loss"], rtol=1e-5)


# --------------------------------------------------------------------------- refusal and data check


def test_a_suite_without_its_files_refuses_with_the_exact_files(datadir: Path) -> None:
    suite = get_suite("cifar10-resnet18").replace()  # a fresh object: no cached data
    with pytest.raises(DataUnavailableError) as info:
        suite.data  # noqa: B018
    message = str(info.value)
    assert "\n" not in message
    for name in (
        "cifar-10-batches-py/data_batch_1",
        "cifar-10-batches-py/data_batch_5",
        "cifar-10-batches-py/test_batch",
    ):
        assert name in message
    assert str(datadir) in message and "--data-dir" in message and ENV_VAR in message


def test_data_check_of_one_suite_exits_1_when_its_files_are_missing(datadir: Path) -> None:
    result = CliRunner().invoke(app, ["data", "check", "--suite", "fashion-mnist-mlp"])
    assert result.exit_code == 1
    assert "fashion-mnist-mlp (gpu): MISSING 4 of 4" in result.output
    assert (
        f"{datadir}/fashion-mnist/train-images-idx3-ubyte.gz or {datadir}/fashion-mnist/train-images-idx3-ubyte"
        in result.output
    )


def test_data_check_lists_every_suite_and_what_is_missing(datadir: Path, tmp_path: Path) -> None:
    _write_fashion(datadir, gz=False)
    runner = CliRunner()
    result = runner.invoke(app, ["data", "check"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"data directory: {datadir} (${ENV_VAR})" in out
    assert "fashion-mnist-mlp (gpu): ok" in out and f"ok      {datadir}/fashion-mnist/t10k-labels-idx1-ubyte" in out
    assert "cifar10-resnet18 (gpu): MISSING 6 of 6" in out
    assert "cifar100-vit-lora (gpu): MISSING 4 of 5" in out
    assert f"missing {datadir}/vit-base-patch16-224/model.safetensors  (vit-base-patch16-224 weights" in out
    assert "digits-cnn (ci): ok" in out and "minilm-lora (ci): ok" in out
    other = tmp_path / "other"
    other.mkdir()
    result = runner.invoke(app, ["data", "check", "--data-dir", str(other), "--suite", "digits-cnn"])
    assert result.exit_code == 0 and f"data directory: {other} (--data-dir)" in result.output
    assert "fashion-mnist-mlp" not in result.output


def test_unknown_suite_in_data_check_is_one_clear_error() -> None:
    from harness.cli import main

    assert main(["data", "check", "--suite", "no-such-suite"]) == 2


# --------------------------------------------------------------------------- cache


def test_cache_builds_once_and_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "cache"))
    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"a": np.arange(5), "b": np.ones((2, 2))}

    first = cache.cached_arrays("thing", {"k": 1}, build)
    second = cache.cached_arrays("thing", {"k": 1}, build)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["a"], second["a"])
    cache.cached_arrays("thing", {"k": 2}, build)
    assert len(calls) == 2
    entry = tmp_path / "cache" / f"thing-{cache._key_hash({'k': 1})}.npz"
    assert entry.is_file()
    entry.write_bytes(b"corrupt")
    cache.cached_arrays("thing", {"k": 1}, build)
    assert len(calls) == 3
