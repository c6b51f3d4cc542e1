"""When a GPU dies mid-sweep: the run is stored as ``crashed``, the GPU's lane is retired, the
sweep goes on on the other lanes; with every lane retired the rest comes back ``crashed``
(docs/gpu-host.md, "When a GPU dies"). The GPUs are simulated: the lanes run on the CPU and the
health check that would run a kernel on each GPU is replaced by one that reads a set of dead
GPUs (one executor, one launcher, two sweeps)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from db.store import open_store
from harness.devices import CPU_ENV, DevicePlan, LanePlan
from harness.executors import local
from harness.executors.local import LocalExecutor
from harness.orchestrator import run_sweep
from harness.plans import expand
from harness.sweep import load_config

pytestmark = pytest.mark.slow  # lane retirement with real workers

EXITING = "tests.faulty_adapters:Exiting"


def _stored(db: Path, sweep_id: int) -> list[tuple[str, str]]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT status, error FROM runs WHERE sweep_id = ?", (sweep_id,)).fetchall()
    con.close()
    return rows


def test_a_dead_gpu_retires_its_lane_and_the_sweep_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead: set[str] = {"1"}
    checked: list[str] = []

    def health(env: Any) -> tuple[bool, str]:
        checked.append(env["FAKE_GPU"])
        if env["FAKE_GPU"] in dead:
            return False, "GPU health check failed: CUDA error: unspecified launch failure"
        return True, "ok"

    monkeypatch.setattr(local, "device_healthy", health)
    lanes = tuple(LanePlan(f"gpu{i}", "cpu", {**CPU_ENV, "FAKE_GPU": str(i)}, 1, gpu=str(i)) for i in range(2))
    executor = LocalExecutor(plan=DevicePlan("local", True, 2, 1, lanes))
    db = tmp_path / "s.db"
    store = open_store(str(db))

    def sweep(name: str, seeds: int) -> Any:
        config = load_config(
            {"name": name, "suites": ["tiny-ce"], "optimizers": [EXITING], "seeds": list(range(seeds)), "steps": 4}
        )
        return run_sweep(expand(config), store, executor, close_executor=False)

    try:
        first = sweep("one-gpu-dies", 4)
        dead.add("0")  # then the other one dies too
        second = sweep("both-gpus-die", 3)
    finally:
        executor.close()
        store.dispose()

    # GPU 1's lane ran exactly one run (the one after which its GPU failed) and retired;
    # GPU 0 passed its checks after each failed run and kept its lane: the failures were the runs' own.
    rows = _stored(db, first.sweep_id)
    assert not first.interrupted and first.stored == 4 and [s for s, _ in rows] == ["crashed"] * 4
    by_lane: dict[str, list[str]] = {}
    for outcome in first.outcomes:
        by_lane.setdefault(outcome.lane, []).append(outcome.result.error or "")
    assert len(by_lane["gpu1"]) == 1 and len(by_lane["gpu0"]) == 3
    assert by_lane["gpu1"][0].startswith("GPU 1 (gpu1) failed after this run; lane retired: GPU health check failed")
    assert "exit code 3" in by_lane["gpu1"][0]  # the run's own failure is kept below
    assert all("retired" not in e and "exit code 3" in e for e in by_lane["gpu0"])
    assert sum("lane retired" in error for _, error in rows) == 1
    assert sorted(checked[:4]) == ["0", "0", "0", "1"]

    # Second sweep: GPU 0 dies after its first run; nothing is left to run the rest, which is
    # stored as crashed without running, and the sweep ends instead of hanging.
    rows = _stored(db, second.sweep_id)
    assert not second.interrupted and second.stored == 3 and [s for s, _ in rows] == ["crashed"] * 3
    errors = [error for _, error in rows]
    assert sum(e.startswith("GPU 0 (gpu0) failed after this run; lane retired") for e in errors) == 1
    assert sum(e.startswith("not run: every GPU lane is retired (GPU 1 (gpu1) failed") for e in errors) == 2
    assert executor.retired.keys() == {"gpu0", "gpu1"}
