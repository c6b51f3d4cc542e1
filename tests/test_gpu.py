"""GPU runs (marker ``gpu``; skipped without CUDA), each able to fail for the reason it exists:

* a step that sleeps on the GPU for a known time (a CUDA sleep kernel, its duration measured
  with CUDA events) is timed at no less than that: an unsynchronised timer would see ~0.1 ms;
* a step that fills a known number of bytes raises the reported CUDA peak above the baseline by
  at least that, and a step that allocates nothing does not;
* CUDA and CPU trajectories agree in float64;
* a JAX run on a GPU lane has the allocator settings the harness sets in force in its worker;
* the device plan, the health check and a sweep use the real GPUs.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backends.methods import sgd
from backends.spec import Batch, adapter_class
from harness.runner import RunSpec, execute
from tests.memory_adapters import ALLOC_MIB

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

MiB = 2**20
#: How long the sleeping step sleeps on the GPU.
SLEEP_S = 0.05


class GpuSleeping(adapter_class(sgd.CARD, "torch")):  # type: ignore[misc]
    """SGD whose step also runs a CUDA sleep kernel of :attr:`cycles` clock cycles."""

    name = "gpu-sleeping"
    cycles = 0

    def init(self, problem: Any, hparams: Any) -> Any:
        return hparams

    def direction(self, problem: Any, params: Any, state: Any, batch: Batch[Any]) -> Any:
        return problem.oracle(params, batch).grad()

    def step(self, problem: Any, params: Any, state: Any, batch: Batch[Any]) -> tuple[Any, Any, dict]:
        loss, g = problem.oracle(params, batch).loss_and_grad()
        torch.cuda._sleep(self.cycles)  # asynchronous: returns at once, the GPU stays busy
        return params - state.lr * g, state, {"loss": loss}


def _cycles_for(seconds: float) -> int:
    """Clock cycles of ``torch.cuda._sleep`` that last ``seconds``, measured with CUDA events."""
    probe = 10_000_000
    torch.cuda._sleep(probe)  # warm-up
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(probe)
    end.record()
    end.synchronize()
    per_cycle = start.elapsed_time(end) / 1000.0 / probe
    return int(seconds / per_cycle)


def _sleep_seconds(cycles: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


def test_a_step_that_sleeps_on_the_gpu_is_timed_at_least_that_long(monkeypatch: pytest.MonkeyPatch) -> None:
    cycles = _cycles_for(SLEEP_S)
    known = _sleep_seconds(cycles)
    assert known > 0.5 * SLEEP_S
    monkeypatch.setattr(GpuSleeping, "cycles", cycles)
    spec = RunSpec(
        "tiny-ce", f"{__name__}:GpuSleeping", steps=8, hparams={"lr": 0.05}, device="cuda", stop_at_target=False
    )
    result = execute(spec)
    assert result.status == "budget_exhausted", result.error
    assert result.step_time_p10_s >= 0.95 * known, (result.step_time_p10_s, known)


def test_a_step_that_allocates_raises_the_cuda_peak_by_at_least_that() -> None:
    def run(name: str) -> Any:
        optimizer = f"tests.memory_adapters:{name}"
        spec = RunSpec("tiny-ce", optimizer, steps=6, hparams={"lr": 0.05}, device="cuda", stop_at_target=False)
        return execute(spec)

    plain, alloc = run("Plain"), run("Allocating")
    assert plain.status == alloc.status == "budget_exhausted", (plain.error, alloc.error)
    assert plain.memory_kind == alloc.memory_kind == "cuda_max_memory_allocated"
    assert alloc.peak_memory_above_baseline_bytes >= ALLOC_MIB * MiB
    assert plain.peak_memory_above_baseline_bytes < ALLOC_MIB * MiB // 4
    assert alloc.peak_memory_bytes >= alloc.peak_memory_above_baseline_bytes


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "kfac"])
def test_cuda_and_cpu_trajectories_agree_in_float64(optimizer: str) -> None:
    def run(device: str) -> Any:
        return execute(RunSpec("digits-mlp", optimizer, steps=40, device=device, dtype="float64", stop_at_target=False))

    cpu, gpu = run("cpu"), run("cuda")
    assert cpu.status == gpu.status, (cpu.error, gpu.error)
    _, _, loss_cpu = cpu.series("train_loss_batch")
    _, _, loss_gpu = gpu.series("train_loss_batch")
    # float64 on both: only the order of floating-point reductions differs (K-FAC's solves included)
    np.testing.assert_allclose(loss_gpu, loss_cpu, rtol=1e-7, atol=1e-12)
    assert gpu.environment["device_kind"] == "cuda" and gpu.environment["device_name"]


def _jax_has_cuda() -> bool:
    return any(_installed(p) for p in ("jax-cuda12-plugin", "jax-cuda13-plugin"))


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _gpu_sweep(tmp_path: Path, backend: str) -> Any:
    from db.store import open_store
    from harness.executors.local import LocalExecutor
    from harness.orchestrator import run_sweep
    from harness.plans import expand
    from harness.sweep import load_config

    config = load_config(
        {
            "name": f"gpu-{backend}",
            "suites": ["tiny-ce"],
            "optimizers": ["sgd"],
            "backends": [backend],
            "seeds": list(range(max(2, torch.cuda.device_count()))),
            "steps": 5,
        }
    )
    store = open_store(str(tmp_path / f"{backend}.db"))
    executor = LocalExecutor()  # the real plan: one lane per visible GPU
    assert executor.plan.use_gpu and executor.slots == torch.cuda.device_count()
    summary = run_sweep(expand(config), store, executor)
    store.dispose()
    return summary


def test_torch_sweep_runs_one_lane_per_gpu(tmp_path: Path) -> None:
    summary = _gpu_sweep(tmp_path, "torch")
    assert summary.stored == len(summary.outcomes) and not summary.interrupted
    for outcome in summary.outcomes:
        result = outcome.result
        assert result.status == "budget_exhausted", result.error
        assert result.environment["device_kind"] == "cuda" and result.memory_kind == "cuda_max_memory_allocated"
        assert result.peak_memory_above_baseline_bytes is not None


@pytest.mark.skipif(not _jax_has_cuda(), reason="needs JAX's CUDA plugin")
def test_jax_allocator_settings_are_in_force_in_the_worker(tmp_path: Path) -> None:
    summary = _gpu_sweep(tmp_path, "jax")
    for outcome in summary.outcomes:
        result = outcome.result
        assert result.status == "budget_exhausted", result.error
        assert result.environment["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert result.environment["device_kind"] == "cuda"
        assert result.memory_kind == "jax_peak_bytes_in_use"
        # without preallocation the device peak is the run's arrays, far below the GPU's memory
        total = torch.cuda.get_device_properties(0).total_memory
        assert 0 < result.peak_memory_bytes < total // 8


def test_device_plan_and_health_check_see_the_real_gpus() -> None:
    from harness.devices import device_healthy, plan_devices, visible_gpu_count

    n = torch.cuda.device_count()
    assert visible_gpu_count() == n
    plan = plan_devices(None, None)
    assert plan.use_gpu and [lane.gpu for lane in plan.lanes] == [str(i) for i in range(n)]
    ok, why = device_healthy(plan.lanes[0].env)
    assert ok and why.startswith("ok: "), why
    dead, why = device_healthy({"CUDA_VISIBLE_DEVICES": "99"})
    assert not dead and "no CUDA device visible" in why
