"""Nightly comparison: the statistics, the baseline choice, the report format, end to end."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from db.store import Store, open_store
from harness import nightly
from harness.runner import RunResult, RunSpec

pytestmark = pytest.mark.slow  # nightly end to end

MACHINE = {"hostname": "gpu-01", "device_kind": "cuda", "device_name": "H100", "cpu": "EPYC"}


# ------------------------------------------------------------------------------------ statistics


def test_permutation_test_is_the_exact_mann_whitney_test() -> None:
    rng = np.random.default_rng(0)
    for n, m in [(3, 4), (4, 4), (5, 3)]:
        a, b = rng.normal(size=n), rng.normal(size=m) + 1.0
        p, _ = nightly.permutation_p_value(a, b)
        assert p == pytest.approx(mannwhitneyu(a, b, method="exact").pvalue, rel=1e-12)


def test_permutation_test_floors_ties_and_infinities() -> None:
    p, floor = nightly.permutation_p_value([1, 2, 3, 4], [5, 6, 7, 8])
    assert p == pytest.approx(2 / 70) and floor == pytest.approx(2 / 70)
    assert nightly.permutation_p_value([1, 2], [3, 4]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert nightly.permutation_p_value([1.0, 2.0], [1.0, 2.0])[0] == 1.0  # identical nights
    p, _ = nightly.permutation_p_value([1, 2, 3, 4], [math.inf] * 4)  # every seed now misses the target
    assert p == pytest.approx(2 / 70)
    # Brute force over all relabellings with ties, as a reference.
    a, b = [1.0, 1.0, 2.0], [2.0, 3.0, math.inf]
    pooled = a + b
    ranks = {v: np.mean([i + 1 for i, w in enumerate(sorted(pooled)) if w == v]) for v in pooled}
    obs = abs(sum(ranks[v] for v in a) - 3 * 7 / 2)
    splits = list(itertools.combinations(range(6), 3))
    ref = sum(abs(sum(ranks[pooled[i]] for i in s) - 3 * 7 / 2) >= obs - 1e-9 for s in splits) / len(splits)
    assert nightly.permutation_p_value(a, b)[0] == pytest.approx(ref)


def test_robust_sigma() -> None:
    assert nightly.robust_sigma([1.0]) is None
    assert nightly.robust_sigma([1.0, 1.0, 1.0]) == 0.0
    x = np.random.default_rng(1).normal(0, 2.0, 20000)
    assert nightly.robust_sigma(x) == pytest.approx(2.0, rel=0.03)


# ------------------------------------------------------------------------------------ synthetic nights


def result(
    optimizer: str, seed: int, *, suite: str = "tiny-ce", status: str = "budget_exhausted", **fields: Any
) -> Any:
    spec = RunSpec(suite, optimizer, seed=seed, hparams=fields.pop("hparams", {}))
    r = RunResult(spec=spec, status=status, key=f"{optimizer}-{seed}-{fields.pop('night', 0)}", target="val >= 0.9")
    r.environment = fields.pop("environment", {})
    for k, v in fields.items():
        setattr(r, k, v)
    return r


def night(
    store: Store,
    rows: list[Any],
    *,
    name: str = "nightly",
    env: dict[str, Any] | None = None,
    status: str = "finished",
) -> int:
    env = dict(MACHINE if env is None else env)
    env.setdefault("git_commit", f"c{len(rows)}")
    env["fingerprint"] = f"fp-{json.dumps(env, sort_keys=True)}"
    sid = store.create_sweep(name, kind="nightly")
    store.set_sweep_environment(sid, env)
    for i, r in enumerate(rows):
        r.key = f"{r.key}-{sid}-{i}"
        r.environment = env
        store.save_run(r, sweep_id=sid)
    store.finish_sweep(sid, status)
    return sid


def base_rows(scale: dict[str, float] | None = None, loss: float = 0.5, ttt: float | None = 1.0) -> list[Any]:
    """Four seeds of four optimizers with tight, realistic run-to-run spreads."""
    scale = scale or {}
    rows = []
    for opt, step in (("sgd", 1e-3), ("adamw", 2e-3), ("ief", 5e-3), ("kfac", 4e-3)):
        for seed in range(4):
            jitter = 1.0 + 0.01 * (seed - 1.5)
            rows.append(
                result(
                    opt,
                    seed,
                    step_time_median_s=step * jitter * scale.get(opt, 1.0),
                    peak_memory_bytes=int(300e6 * (1 + 0.001 * seed) * scale.get(opt + "-mem", 1.0)),
                    memory_kind="cuda_max_memory_allocated",
                    final_train_loss=loss * (1 + 0.02 * seed) * scale.get(opt + "-loss", 1.0),
                    time_to_target_s=None if ttt is None else ttt * (1 + 0.05 * seed),
                )
            )
    return rows


def flags(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(i["optimizer"], i["metric"]): i["flag"] for i in report["items"]}


def test_first_nightly_has_no_baseline(tmp_path: Path) -> None:
    store = open_store(tmp_path / "n.db")
    sid = night(store, base_rows())
    report = nightly.compare(store, sid)
    assert report["previous_sweep_id"] is None and report["items"] == []
    assert report["summary"]["flagged"] == 0 and "nothing to compare" in report["summary"]["note"]


def test_changes_are_flagged_in_both_directions_and_noise_is_not(tmp_path: Path) -> None:
    store = open_store(tmp_path / "n.db")
    night(store, base_rows(), env={**MACHINE, "device_name": "A100"})  # another machine: never the baseline
    before = night(store, base_rows())
    night(store, base_rows(), name="other-nightly")  # another sweep name: never the baseline
    night(store, base_rows({"sgd": 1.3}), status="interrupted")  # an interrupted nightly: never the baseline
    store.create_sweep("nightly", kind="sweep")  # not a nightly
    changed = base_rows({"sgd": 1.30, "adamw": 0.70, "ief": 1.03, "kfac-mem": 1.25, "ief-loss": 1.10})
    for r in changed:
        if r.spec.optimizer == "kfac":
            r.time_to_target_s = None  # kfac no longer reaches the target
    after = night(store, changed, env={**MACHINE, "git_commit": "new", "torch": "2.14"})
    assert nightly.previous_nightly(store, after) == before

    report = nightly.compare(store, after)
    f = flags(report)
    assert f[("sgd", "step_time_median_s")] == "slowdown"
    assert f[("adamw", "step_time_median_s")] == "speedup"
    assert f[("ief", "step_time_median_s")] == "unchanged"  # +3% is inside the 5% floor
    assert f[("kfac", "peak_memory_bytes")] == "regression"
    assert f[("sgd", "peak_memory_bytes")] == "unchanged"
    assert f[("ief", "final_train_loss")] == "regression"
    assert f[("sgd", "final_train_loss")] == "unchanged"
    assert f[("kfac", "time_to_target_s")] == "regression"
    item = next(i for i in report["items"] if i["optimizer"] == "ief" and i["metric"] == "final_train_loss")
    assert item["p_value"] == pytest.approx(2 / 70) and item["ratio"] == pytest.approx(1.10)
    sgd = next(i for i in report["items"] if i["optimizer"] == "sgd" and i["metric"] == "step_time_median_s")
    assert sgd["ratio"] == pytest.approx(1.30) and sgd["threshold"] == pytest.approx(0.05)
    assert report["changes"]["git_commit"][1] == "new" and report["changes"]["torch"] == [None, "2.14"]
    s = report["summary"]
    assert (s["slowdowns"], s["speedups"], s["regressions"]) == (1, 1, 3)
    assert nightly.has_regressions(report)
    # The documented Sweep.report format, JSON-safe, stored on the sweep.
    for i in report["items"]:
        assert {"suite", "optimizer", "backend", "metric", "previous", "current", "ratio", "threshold"} <= set(i)
        assert {"p_value", "flag", "detail"} <= set(i)
        assert i["flag"] in ("slowdown", "speedup", "regression", "improvement", "unchanged")
    store.set_sweep_report(after, report)
    from db.queries import sweeps_frame

    stored = sweeps_frame(store, kind="nightly").set_index("id").loc[after, "report"]
    assert stored["summary"]["flagged"] == s["flagged"] and json.dumps(stored)


def test_threshold_follows_the_measured_spread(tmp_path: Path) -> None:
    """A +30% step time is a slowdown on a quiet machine, not on one whose runs scatter by 40%."""
    store = open_store(tmp_path / "n.db")
    noisy = base_rows()
    for r in noisy:
        if r.spec.optimizer == "sgd":
            r.step_time_median_s *= (0.6, 1.0, 1.4, 1.8)[r.spec.seed]
    night(store, noisy)
    louder = base_rows({"sgd": 1.3})
    for r in louder:
        if r.spec.optimizer == "sgd":
            r.step_time_median_s *= (1.8, 0.6, 1.0, 1.4)[r.spec.seed]
    after = night(store, louder)
    item = next(i for i in nightly.compare(store, after)["items"] if i["optimizer"] == "sgd" and "step" in i["metric"])
    assert item["flag"] == "unchanged" and item["threshold"] > 0.3


def test_night_to_night_spread_widens_the_band(tmp_path: Path) -> None:
    store = open_store(tmp_path / "n.db")
    for level in (1.0, 1.12, 0.9, 1.1, 0.95):  # a history that wanders by ~10% between nights
        night(store, base_rows({"adamw": level}))
    after = night(store, base_rows({"adamw": 0.95 * 1.12}))
    item = next(
        i for i in nightly.compare(store, after)["items"] if i["optimizer"] == "adamw" and "step" in i["metric"]
    )
    assert item["flag"] == "unchanged" and item["threshold"] > 0.12 and "nights" in item["detail"]


def test_few_seeds_are_reported_as_underpowered_and_failures_count(tmp_path: Path) -> None:
    store = open_store(tmp_path / "n.db")
    night(store, [r for r in base_rows() if r.spec.seed < 2])
    now = [r for r in base_rows({"sgd-loss": 1.5}) if r.spec.seed < 2]
    for r in now:
        if r.spec.optimizer == "adamw":
            r.status, r.error = "oom", "CUDA out of memory"
    after = night(store, now)
    report = nightly.compare(store, after)
    loss = next(i for i in report["items"] if i["optimizer"] == "sgd" and i["metric"] == "final_train_loss")
    assert loss["flag"] == "unchanged" and loss["underpowered"] and "cannot reach p<0.05" in loss["detail"]
    failed = next(i for i in report["items"] if i["optimizer"] == "adamw" and i["metric"] == "failed_runs")
    assert failed["flag"] == "regression" and "oom" in failed["detail"]
    assert report["summary"]["underpowered"] > 0


def test_render_prints_flags_and_escapes_names(tmp_path: Path) -> None:
    from rich.console import Console

    store = open_store(tmp_path / "n.db")
    night(store, base_rows())
    rows = base_rows({"sgd": 2.0})
    for r in rows:
        r.spec = RunSpec("tiny-ce", "[red]x[/red]" if r.spec.optimizer == "ief" else r.spec.optimizer, seed=r.spec.seed)
    after = night(store, rows)
    console = Console(record=True, width=250)
    nightly.render(nightly.compare(store, after), console)
    text = console.export_text()
    assert "slowdown" in text and "sgd" in text and "step_time_median_s" in text
    assert "+100.0%" in text
    assert "new groups: tiny-ce [red]x[/red] torch" in text  # user text printed literally


# ------------------------------------------------------------------------------------ end to end


def test_two_nightlies_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two real nightlies; the second has a 20 ms sleep in every step and a halved learning rate."""
    from harness.cli import main
    from harness.executors.local import LocalExecutor
    from harness.orchestrator import run_sweep
    from harness.plans import load

    sweep = tmp_path / "nightly.toml"
    sweep.write_text(
        'name = "nightly-test"\nsuites = ["tiny-ce"]\noptimizers = ["tests.faulty_adapters:SlowSGD", "sgd"]\n'
        "seeds = 4\nsteps = 12\nstop_at_target = false\ntimeout_s = 120\n"
    )
    db = tmp_path / "n.db"
    monkeypatch.chdir(tmp_path)
    store = open_store(db)
    first = run_sweep(load(sweep), store, LocalExecutor(("cpu",), 2), kind="nightly")
    assert first.stored == 8
    monkeypatch.setenv("NGBENCH_TEST_STEP_DELAY", "0.02")
    monkeypatch.setenv("NGBENCH_TEST_LR_SCALE", "0.5")
    out = tmp_path / "report.json"
    code = main(
        [
            "nightly",
            str(sweep),
            "--db",
            str(db),
            "--workers",
            "2",
            "--devices",
            "cpu",
            "--report-json",
            str(out),
            "--site-dir",
            str(tmp_path / "site"),
            "--fail-on-regression",
        ]
    )
    assert code == 1  # --fail-on-regression: the slowdown is a regression
    report = json.loads(out.read_text())
    assert report["previous_sweep_id"] == first.sweep_id
    f = flags(report)
    slow = "tests.faulty_adapters:SlowSGD"
    assert f[(slow, "step_time_median_s")] == "slowdown"
    assert f[(slow, "final_train_loss")] == "regression"  # a halved learning rate: every seed worse
    assert f[("sgd", "final_train_loss")] == "unchanged"  # untouched method, bit-identical losses
    item = next(i for i in report["items"] if i["optimizer"] == "sgd" and i["metric"] == "final_train_loss")
    assert item["ratio"] == 1.0 and item["p_value"] == 1.0
    assert (tmp_path / "site" / "index.html").exists()
    from db.queries import sweeps_frame

    stored = sweeps_frame(store, kind="nightly").set_index("id").loc[report["sweep_id"], "report"]
    assert stored["summary"] == report["summary"]
