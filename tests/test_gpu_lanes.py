"""When a GPU dies mid-sweep: the run is stored as ``crashed``, the GPU's lane is retired, the
sweep goes on on the other lanes; with every lane retired the rest comes back ``crashed``
(docs/gpu-host.md, "When a GPU dies"). The GPUs are simulated: the lanes run on the CPU and the
health check that would run a kernel on each GPU is replaced by one that reports GPU 1 dead."""

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
from harness.sweep import expand, load_config

EXITING = "tests.faulty_adapters:Exiting"


def _plan(dead: set[str], monkeypatch: pytest.MonkeyPatch) -> DevicePlan:
    def health(env: Any) -> tuple[bool, str]:
        if env["FAKE_GPU"] in dead:
            return False, "GPU health check failed: CUDA error: unspecified launch failure"
        return True, "ok"

    monkeypatch.setattr(local, "device_healthy", health)
    lanes = tuple(LanePlan(f"gpu{i}", "cpu", {**CPU_ENV, "FAKE_GPU": str(i)}, 1, gpu=str(i)) for i in range(2))
    return DevicePlan("local", True, 2, 1, lanes)


def _sweep(tmp_path: Path, plan: DevicePlan, seeds: int) -> tuple[Any, list[tuple[str, str]]]:
    config = load_config(
        {"name": "gpu-dies", "suites": ["tiny-ce"], "optimizers": [EXITING], "seeds": list(range(seeds)), "steps": 4}
    )
    db = tmp_path / "s.db"
    store = open_store(str(db))
    executor = LocalExecutor(plan=plan)
    summary = run_sweep(expand(config), store, executor)
    store.dispose()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT status, error FROM runs WHERE sweep_id = ?", (summary.sweep_id,)).fetchall()
    con.close()
    return summary, rows


def test_a_dead_gpu_retires_its_lane_and_the_sweep_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary, rows = _sweep(tmp_path, _plan({"1"}, monkeypatch), seeds=6)
    assert not summary.interrupted and summary.stored == 6 and len(rows) == 6
    assert all(status == "crashed" for status, _ in rows)
    by_lane: dict[str, list[str]] = {}
    for outcome in summary.outcomes:
        by_lane.setdefault(outcome.lane, []).append(outcome.result.error or "")
    # GPU 1's lane ran exactly one run (the one after which its GPU failed), then retired ...
    assert len(by_lane["gpu1"]) == 1
    assert by_lane["gpu1"][0].startswith("GPU 1 (gpu1) failed after this run; lane retired: GPU health check failed")
    assert "exit code 3" in by_lane["gpu1"][0]  # the run's own failure is kept below
    # ... and GPU 0's lane ran everything else: its failures are the runs' own, not its GPU's
    assert len(by_lane["gpu0"]) == 5 and all("retired" not in e and "exit code 3" in e for e in by_lane["gpu0"])
    assert sum("lane retired" in (error or "") for _, error in rows) == 1


def test_with_every_gpu_dead_the_rest_is_stored_crashed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary, rows = _sweep(tmp_path, _plan({"0", "1"}, monkeypatch), seeds=5)
    assert not summary.interrupted and summary.stored == 5 and len(rows) == 5
    assert all(status == "crashed" for status, _ in rows)
    assert sum("lane retired" in error and "every GPU lane is retired" not in error for _, error in rows) == 2
    assert sum(error.startswith("not run: every GPU lane is retired") for _, error in rows) == 3


def test_a_healthy_gpu_keeps_its_lane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary, rows = _sweep(tmp_path, _plan(set(), monkeypatch), seeds=4)
    assert summary.stored == 4 and all(status == "crashed" and "retired" not in error for status, error in rows)
    assert {o.lane for o in summary.outcomes} <= {"gpu0", "gpu1"}
