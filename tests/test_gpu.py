"""GPU runs (marker ``gpu``; skipped without CUDA): the same run on ``cuda`` follows the CPU
trajectory within float32 tolerance and reports CUDA peak memory and synchronised step times."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.runner import RunSpec, execute

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_cuda_run_follows_cpu_trajectory(optimizer: str) -> None:
    cpu = execute(RunSpec("digits-mlp", optimizer, steps=60, device="cpu", stop_at_target=False))
    gpu = execute(RunSpec("digits-mlp", optimizer, steps=60, device="cuda", stop_at_target=False))
    assert cpu.status == gpu.status
    _, _, loss_cpu = cpu.series("train_loss_batch")
    _, _, loss_gpu = gpu.series("train_loss_batch")
    np.testing.assert_allclose(loss_gpu, loss_cpu, rtol=2e-3, atol=2e-4)
    assert gpu.memory_kind == "cuda_max_memory_allocated"
    assert 0 < gpu.peak_memory_bytes < 2**30
    assert gpu.environment["device_kind"] == "cuda" and gpu.environment["device_name"]
    assert gpu.step_time_median_s > 0 and gpu.compile_time_s >= 0


def test_cuda_step_timing_is_synchronised() -> None:
    """A step that launches slow asynchronous work must be timed with that work included."""
    r = execute(RunSpec("digits-mlp", "sgd", steps=20, device="cuda", stop_at_target=False))
    assert r.step_time_p10_s > 1e-5
