"""``ngbench doctor``: the host's GPUs, driver, builds, JAX platform, data and database, and one
line per suite saying what it still lacks (the inventory is simulated where it names a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.commands import doctor
from harness.commands.doctor import HostFacts, report
from suites import get_suite


def _facts(tmp_path: Path, gpus: int) -> HostFacts:
    return HostFacts(
        gpus=[f"{i}: NVIDIA H200 (143771 MiB)" for i in range(gpus)],
        driver="565.57.01" if gpus else None,
        torch="2.13.0",
        torch_cuda="12.8" if gpus else None,
        torch_gpus=gpus,
        jax="0.7.0",
        jax_cuda_plugin="0.7.0" if gpus else None,
        jax_platform="gpu: NVIDIA H200" if gpus else "cpu",
        data_dir=str(tmp_path),
        database="sqlite:///x.db",
        database_ok=True,
    )


def test_report_says_what_each_suite_lacks(tmp_path: Path) -> None:
    suites = [get_suite(n) for n in ("digits-mlp", "cifar10-resnet18", "tiny-ce")]
    lines, ready = report(_facts(tmp_path, 0), suites)
    assert not ready
    assert lines[:6] == [
        "GPUs: 0",
        "driver: none (nvidia-smi not found or failed)",
        "torch 2.13.0: CPU build (no CUDA)",
        "jax 0.7.0, no CUDA plugin; a JAX run gets: cpu",
        f"data directory: {tmp_path}",
        "database: sqlite:///x.db (reachable)",
    ]
    assert "  digits-mlp (ci): ready" in lines
    assert "  tiny-ce (test): ready" in lines  # test suites have no target by design
    cifar = next(line for line in lines if line.startswith("  cifar10-resnet18 (gpu): missing "))
    assert "a GPU (GPU-size suite)" in cifar and "ngbench calibrate cifar10-resnet18" in cifar
    assert "cifar-10" in cifar.lower()  # its data files, which the empty data directory lacks


def test_report_on_a_gpu_host(tmp_path: Path) -> None:
    lines, _ = report(_facts(tmp_path, 2), [get_suite("cifar10-resnet18")])
    assert lines[0] == "GPUs: 2\n  0: NVIDIA H200 (143771 MiB)\n  1: NVIDIA H200 (143771 MiB)"
    assert lines[1] == "driver: 565.57.01"
    assert lines[2] == "torch 2.13.0: CUDA 12.8 build, 2 GPU(s) usable"
    assert lines[3] == "jax 0.7.0, CUDA plugin 0.7.0; a JAX run gets: gpu: NVIDIA H200"
    assert "a GPU" not in lines[-1] and "missing" in lines[-1]  # data and target still missing


def test_cli_exit_status_follows_database_and_named_suites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(doctor, "nvidia_smi", lambda: (["0: NVIDIA H200 (143771 MiB)"], "565.57.01"))
    monkeypatch.setattr(doctor, "jax_platform", lambda: "gpu: NVIDIA H200")
    monkeypatch.setattr("harness.devices.torch_gpu_count", lambda: 1)
    db = str(tmp_path / "n.db")
    assert main(["doctor", "--db", db, "--suite", "digits-mlp"]) == 0
    out = capsys.readouterr().out
    assert "GPUs: 1\n  0: NVIDIA H200 (143771 MiB)\ndriver: 565.57.01\n" in out
    assert "(reachable)" in out and out.rstrip().endswith("digits-mlp (ci): ready")
    assert main(["doctor", "--db", db, "--suite", "cifar10-resnet18", "--data-dir", str(tmp_path)]) == 1
    assert "cifar10-resnet18 (gpu): missing" in capsys.readouterr().out
    assert main(["doctor", "--db", str(tmp_path / "no" / "such" / "dir.db"), "--suite", "digits-mlp"]) == 1
    assert "UNREACHABLE" in capsys.readouterr().out


def test_cli_on_this_host_asks_a_worker_for_the_jax_platform(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--db", str(tmp_path / "n.db"), "--suite", "tiny-ce"]) == 0
    out = capsys.readouterr().out
    jax_line = next(line for line in out.splitlines() if line.startswith("jax "))
    platform = jax_line.split("a JAX run gets: ", 1)[1]
    assert platform == "cpu" or platform.startswith("gpu: "), jax_line
