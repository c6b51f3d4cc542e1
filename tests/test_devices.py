"""Device planning on 0, 1, 2 and 8 visible GPUs, with and without --devices/--workers, on the
local and the Ray executor, and through every command that plans devices (the device
inventory is simulated: harness.devices' torch/nvidia-smi queries are patched)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness import devices
from harness.devices import plan_devices, single_device
from harness.errors import ConfigError

CPU_ENV = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}


def _table(plan: Any) -> tuple[Any, ...]:
    """``(use_gpu, slots, threads, ((lane, device, CUDA_VISIBLE_DEVICES), ...))``."""
    lanes = tuple((lane.name, lane.device, lane.env.get("CUDA_VISIBLE_DEVICES")) for lane in plan.lanes)
    return plan.use_gpu, plan.slots, plan.threads, lanes


def _gpu_lanes(*indices: int) -> tuple[tuple[str, str, str], ...]:
    return tuple((f"gpu{i}", "cuda", str(i)) for i in indices)


def _cpu_lanes(n: int) -> tuple[tuple[str, str, str], ...]:
    return tuple((f"cpu{i}", "cpu", "") for i in range(n))


#: (GPUs visible, --devices, --workers, command default) -> local plan, on 16 cores.
LOCAL_PLANS: list[tuple[int, tuple[str, ...] | None, int | None, int | None, Any]] = [
    # no GPU: CPU lanes; --workers, else the command's default (quickstart: cores, at most 4), else 1
    (0, None, None, None, (False, 1, 16, _cpu_lanes(1))),
    (0, None, 2, None, (False, 2, 8, _cpu_lanes(2))),
    (0, None, None, 4, (False, 4, 4, _cpu_lanes(4))),
    (0, None, 2, 4, (False, 2, 8, _cpu_lanes(2))),
    (0, ("cpu",), 3, None, (False, 3, 5, _cpu_lanes(3))),
    (0, ("cuda:0",), None, None, "GPU(s) cuda:0 not visible (visible: none)"),
    # one GPU: one GPU lane; the command's CPU default does not apply (quickstart on 1 GPU, 2 cores)
    (1, None, None, None, (True, 1, 16, _gpu_lanes(0))),
    (1, None, None, 4, (True, 1, 16, _gpu_lanes(0))),
    (1, None, 1, None, (True, 1, 16, _gpu_lanes(0))),
    (1, None, 2, None, "--workers 2 with 1 GPU(s)"),
    (1, ("cpu",), 2, None, (False, 2, 8, _cpu_lanes(2))),
    (1, ("cpu",), None, 4, (False, 4, 4, _cpu_lanes(4))),
    (1, ("cuda:0",), None, None, (True, 1, 16, _gpu_lanes(0))),
    (1, ("cuda:1",), None, None, "GPU(s) cuda:1 not visible (visible: cuda:0)"),
    # two GPUs
    (2, None, None, None, (True, 2, 8, _gpu_lanes(0, 1))),
    (2, None, None, 4, (True, 2, 8, _gpu_lanes(0, 1))),
    (2, None, 1, None, (True, 1, 16, _gpu_lanes(0))),
    (2, None, 2, None, (True, 2, 8, _gpu_lanes(0, 1))),
    (2, None, 3, None, "--workers 3 with 2 GPU(s)"),
    (2, ("cuda:1",), None, None, (True, 1, 16, _gpu_lanes(1))),
    (2, ("cuda:1", "cuda:0"), None, None, (True, 2, 8, _gpu_lanes(1, 0))),
    (2, ("cpu",), None, None, (False, 1, 16, _cpu_lanes(1))),
    # eight GPUs
    (8, None, None, None, (True, 8, 2, _gpu_lanes(*range(8)))),
    (8, None, None, 4, (True, 8, 2, _gpu_lanes(*range(8)))),
    (8, None, 4, None, (True, 4, 4, _gpu_lanes(0, 1, 2, 3))),
    (8, ("cuda:2", "cuda:5"), None, None, (True, 2, 8, _gpu_lanes(2, 5))),
    (8, ("cuda:2", "cuda:5"), 1, None, (True, 1, 16, _gpu_lanes(2))),
    (8, ("cuda:8",), None, None, "GPU(s) cuda:8 not visible"),
    (8, ("cpu",), 2, 4, (False, 2, 8, _cpu_lanes(2))),
]


@pytest.mark.parametrize(("gpus", "devs", "workers", "default", "expected"), LOCAL_PLANS)
def test_local_plan_table(gpus: int, devs: Any, workers: Any, default: Any, expected: Any) -> None:
    def plan() -> Any:
        return plan_devices(devs, workers, gpus=gpus, cores=16, default_workers=default, parent_visible="")

    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            plan()
        return
    got = plan()
    assert _table(got) == expected
    for lane in got.lanes:
        assert dict(lane.env) == (CPU_ENV if lane.device == "cpu" else {"CUDA_VISIBLE_DEVICES": lane.gpu})


def test_gpu_lanes_map_through_the_parents_visible_devices() -> None:
    """With CUDA_VISIBLE_DEVICES=4,6 in the parent, torch's cuda:1 is physical GPU 6."""
    plan = plan_devices(None, None, gpus=2, cores=4, parent_visible="4,6")
    assert [(lane.name, lane.env["CUDA_VISIBLE_DEVICES"]) for lane in plan.lanes] == [("gpu0", "4"), ("gpu1", "6")]


#: (cluster GPUs, --devices, --workers) -> Ray plan (use_gpu, concurrent tasks), 32 CPUs, 2 per task.
RAY_PLANS: list[tuple[int, tuple[str, ...] | None, int | None, Any]] = [
    (0, None, None, (False, 16)),
    (0, None, 3, (False, 3)),
    (0, ("cpu",), None, (False, 16)),
    (1, None, None, (True, 1)),
    (1, None, 2, "--workers 2 with 1 GPU(s) in the Ray cluster"),
    (1, ("cpu",), 2, (False, 2)),
    (2, None, None, (True, 2)),
    (2, None, 1, (True, 1)),
    (8, None, None, (True, 8)),
    (8, None, 4, (True, 4)),
    (8, ("cpu",), None, (False, 16)),
    (8, ("cuda:0",), None, "use 'cpu' or leave it out"),
]


@pytest.mark.parametrize(("gpus", "devs", "workers", "expected"), RAY_PLANS)
def test_ray_plan_table(gpus: int, devs: Any, workers: Any, expected: Any) -> None:
    def plan() -> Any:
        return plan_devices(devs, workers, executor="ray", gpus=gpus, cores=32, cpus_per_task=2)

    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            plan()
        return
    got = plan()
    assert (got.use_gpu, got.slots) == expected
    assert got.lanes == () and got.threads == 2


def test_bad_requests_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="--workers must be positive"):
        plan_devices(("cpu",), 0, gpus=0)
    with pytest.raises(ConfigError, match="unknown executor 'slurm'"):
        plan_devices(None, None, executor="slurm", gpus=0)


@pytest.mark.parametrize(
    ("device", "gpus", "expected"),
    [
        ("auto", 0, "cpu"),
        ("auto", 1, "cuda:0"),
        ("cpu", 8, "cpu"),
        ("cuda", 2, "cuda:0"),
        ("cuda:7", 8, "cuda:7"),
        ("cuda", 0, "--device cuda: 0 GPU"),
        ("cuda:2", 2, "--device cuda:2: 2 GPU"),
        ("cuda:x", 1, "unknown device 'cuda:x'"),
        ("mps", 0, "mps"),  # the backend's to judge
    ],
)
def test_single_device_of_in_process_commands(device: str, gpus: int, expected: str) -> None:
    if expected.startswith(("--", "unknown")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            single_device(device, gpus)
    else:
        assert single_device(device, gpus) == expected


def test_inventory_prefers_torch_and_falls_back_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "torch_gpu_count", lambda: 2)
    monkeypatch.setattr(devices, "smi_gpu_count", lambda: 8)
    assert devices.visible_gpu_count() == 2
    monkeypatch.setattr(devices, "torch_gpu_count", lambda: 0)  # a CPU torch on a JAX/CUDA host
    assert devices.visible_gpu_count() == 8
    assert plan_devices(None, None, cores=8).slots == 8


# --------------------------------------------------------------------------- through the commands


class _Planned(Exception):
    """Raised by the patched executor factory: the plan is captured, nothing runs."""


@pytest.fixture
def captured_plans(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Executors the commands build (their plans), with the GPU inventory patched per test."""
    import harness.plans as executors  # where the commands' plans meet the executors

    plans: list[Any] = []
    real = executors.make_executor

    def capture(name: str, **options: Any) -> Any:
        executor = real(name, **options)
        plans.append(executor.plan)
        raise _Planned

    monkeypatch.setattr(executors, "make_executor", capture)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    return plans


SWEEP_FILE = 'name = "plan"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\nsteps = 2\n'


def _invoke(args: list[str]) -> Any:
    from harness.cli import app

    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("gpus", [0, 1, 2, 8])
@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("quickstart", []),
        ("quickstart", ["--workers", "1"]),
        ("quickstart", ["--devices", "cpu", "--workers", "2"]),
        ("sweep", []),
        ("nightly", []),
        ("sweep", ["--devices", "cpu", "--workers", "2"]),
        ("tune", []),
    ],
)
def test_commands_plan_devices_the_same_way(
    gpus: int,
    command: str,
    extra: list[str],
    captured_plans: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(devices, "visible_gpu_count", lambda: gpus)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SWEEP_FILE)
    args = {
        "quickstart": ["quickstart", "--suite", "tiny-ce"],
        "sweep": ["sweep", "s.toml"],
        "nightly": ["nightly", "s.toml"],
        "tune": ["tune", "tiny-ce", "sgd", "--trials", "2"],
    }[command] + extra
    result = _invoke(args)
    assert isinstance(result.exception, _Planned), result.output
    (plan,) = captured_plans
    if "cpu" in extra:
        assert _table(plan) == (False, 2, 1, _cpu_lanes(2))
    elif gpus == 0:
        # quickstart: one worker per core (2 here); sweep, nightly, tune: one worker by default
        n = 2 if command == "quickstart" and not extra else 1
        assert _table(plan) == (False, n, 2 // n, _cpu_lanes(n))
    elif extra == ["--workers", "1"]:
        assert _table(plan) == (True, 1, 2, _gpu_lanes(0))
    else:  # one worker per GPU, whatever the command's CPU default
        assert _table(plan) == (True, gpus, max(1, 2 // gpus), _gpu_lanes(*range(gpus)))
    assert not (tmp_path / "ngbench.db").exists()  # planned before the database is touched


def test_sweep_file_workers_beyond_the_gpus_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SWEEP_FILE + "workers = 2\n")
    assert main(["sweep", "s.toml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ngbench: error: --workers 2 with 1 GPU(s)") and "--devices cpu" in err
    (tmp_path / "s.toml").write_text(SWEEP_FILE + 'workers = 2\ndevices = "cpu"\n')
    assert main(["sweep", "s.toml", "--dry-run"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "tiny-ce", "sgd", "--device", "cuda:1"], "--device cuda:1: 1 GPU(s) visible"),
        (["calibrate", "tiny-ce", "--device", "cuda:3"], "--device cuda:3: 1 GPU(s) visible"),
        (["approx", "tiny-ce", "--device", "cuda:2", "--no-store"], "--device cuda:2: 1 GPU(s) visible"),
    ],
)
def test_in_process_commands_check_their_device_first(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main

    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 1)
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ngbench.db").exists()
