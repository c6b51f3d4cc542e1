"""The Ray executor on a local Ray instance (CPU): the same statuses and numbers as local."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from db.store import open_store
from harness.executors.local import LocalExecutor
from harness.executors.ray_executor import RayExecutor
from harness.orchestrator import run_sweep
from harness.plans import expand
from harness.sweep import load_config
from tests.faulty_adapters import SECRET_MARK

pytestmark = [pytest.mark.ray, pytest.mark.slow]

F = "tests.faulty_adapters:"


def plan() -> Any:
    return expand(
        load_config(
            {
                "name": "ray-vs-local",
                "suites": ["tiny-ce"],
                "optimizers": ["sgd", "adamw", F + "Exiting", F + "CredentialProbe"],
                "seeds": [0, 1],
                "steps": 8,
                "stop_at_target": False,
                "timeout_s": 120,
            }
        )
    )


def outcomes(summary: Any) -> dict[tuple[str, int], Any]:
    return {(o.job.spec.optimizer, o.job.spec.seed): o.result for o in summary.outcomes}


def test_ray_matches_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / (SECRET_MARK + '.db')}"
    monkeypatch.setenv("NGBENCH_DB_URL", url)  # local Ray workers inherit the driver's environment
    store = open_store(url)
    on_ray = run_sweep(plan(), store, RayExecutor(devices=("cpu",), workers=2), kind="nightly")
    local = run_sweep(plan(), store, LocalExecutor(("cpu",), 2), kind="nightly")
    store.dispose()

    ray_results, local_results = outcomes(on_ray), outcomes(local)
    assert set(ray_results) == set(local_results) and len(ray_results) == 8
    assert on_ray.stored == 8 and not on_ray.interrupted
    for key, r in ray_results.items():
        other = local_results[key]
        assert r.status == other.status, (key, r.error)
        assert r.key == other.key  # same key: a resume on either executor skips the other's runs
        assert r.final_train_loss == other.final_train_loss  # same worker, same numbers
        assert r.steps == other.steps
    assert {r.status for (opt, _), r in ray_results.items() if opt == F + "Exiting"} == {"crashed"}
    assert all("exit code 3" in r.error for (opt, _), r in ray_results.items() if opt == F + "Exiting")
    probe = [r for (opt, _), r in ray_results.items() if opt == F + "CredentialProbe"]
    assert {r.status for r in probe} == {"budget_exhausted"}  # raises in the worker if it sees the URL
    assert all(o.lane.startswith("ray-") for o in on_ray.outcomes)
    assert "ray (local Ray instance), 2 concurrent tasks" in on_ray.executor


def test_ray_rejects_gpu_indices() -> None:
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="Ray assigns GPUs itself"):
        RayExecutor(devices=("cuda:0",))
