"""A generated results database for site-build benchmarks and smoke tests.

:func:`generate` writes nightly sweeps of every (suite, optimizer, backend, seed) with
plausible curves, statuses (targets reached, budgets spent, divergences, out-of-memory,
errors), step times, memory, pass counts, regression reports and approximation-quality rows,
straight into the tables with bulk inserts (a real sweep writes through
:meth:`db.store.Store.save_run`, one transaction per run; 10,000 of those take minutes).

The numbers are made up; only their shape is realistic. Never point a published site at it.

Command line (used by ``benchmarks/site_build.py``)::

    python -m leaderboard.synthetic OUT.db [--runs 10000] [--points 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import insert

from db.models import ApproxQuality, Environment, Metric, Run, Sweep
from db.store import Store, open_store

#: (name, version, val_metric, target metric, target value, target mode, step budget)
_SUITES: tuple[tuple[str, int, str, str, float, str, int], ...] = (
    ("tiny-ce", 1, "val_accuracy", "val_accuracy", 0.9, "max", 200),
    ("tiny-mse", 1, "val_loss", "val_loss", 0.35, "min", 200),
    ("digits-mlp", 1, "val_accuracy", "val_accuracy", 0.96, "max", 1500),
    ("diabetes-mlp", 1, "val_loss", "val_loss", 0.28, "min", 1000),
    ("synthetic-cnn", 3, "val_accuracy", "val_accuracy", 0.8, "max", 2000),
    ("synthetic-lm", 2, "val_loss", "val_loss", 3.2, "min", 3000),
)
#: name: (relative steps to target, step-time ratio to SGD, memory factor, divergence rate)
_OPTIMIZERS: dict[str, tuple[float, float, float, float]] = {
    "sgd": (1.0, 1.0, 1.0, 0.02),
    "adamw": (0.6, 1.1, 1.3, 0.01),
    "ef": (0.9, 2.4, 2.5, 0.15),
    "ief": (0.42, 2.6, 2.5, 0.02),
    "sf": (0.5, 2.9, 2.6, 0.03),
    "kfac": (0.38, 3.6, 1.8, 0.03),
    "fngd": (0.5, 2.1, 2.0, 0.03),
    "egn": (0.45, 3.1, 2.7, 0.02),
    "adamqlr": (0.55, 2.0, 1.6, 0.02),
}
#: backend: relative step time
_BACKENDS: dict[str, float] = {"torch": 1.0, "jax": 0.85}


@dataclass(frozen=True)
class Generated:
    runs: int
    metric_rows: int
    sweeps: int
    approx_rows: int
    seconds: float


def _current_versions() -> dict[str, int]:
    """Suite versions of the installed catalogue, so that generated runs rank as current."""
    try:
        from suites import get_suite

        out = {}
        for name, version, *_ in _SUITES:
            try:
                out[name] = get_suite(name).version
            except KeyError:
                out[name] = version
        return out
    except Exception:  # the catalogue is optional here
        return {name: version for name, version, *_ in _SUITES}


def _adapter_version(optimizer: str, backend: str, night: int, nights: int) -> str:
    # K-FAC's adapter changes two thirds of the way through: older runs become stale.
    epoch = int(optimizer == "kfac" and night >= (2 * nights) // 3)
    return hashlib.sha256(f"{optimizer}/{backend}/{epoch}".encode()).hexdigest()[:16]


def generate(
    store: Store,
    *,
    runs: int = 10_000,
    points: int = 200,
    seeds: int = 3,
    seed: int = 0,
    approx: bool = True,
) -> Generated:
    """Fill ``store`` with ``runs`` runs of ``points`` metric rows each, in nightly sweeps."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    versions = _current_versions()
    per_night = len(_SUITES) * len(_OPTIMIZERS) * len(_BACKENDS) * seeds
    nights = max(1, math.ceil(runs / per_night))
    start = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)
    n_evals = max(2, points // 5)
    n_batch = max(1, points - 4 * n_evals)

    env_rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    metric_rows: list[tuple[int, int, float, str, float | None]] = []
    history: dict[tuple[str, str, str, str], list[float]] = {}
    run_id = 0
    env_ids: dict[tuple[str, int], int] = {}
    for night in range(nights):
        when = start + timedelta(days=night)
        commit = hashlib.sha1(f"commit{night}".encode()).hexdigest()
        for backend in _BACKENDS:
            env_id = len(env_rows) + 1
            env_ids[(backend, night)] = env_id
            env_rows.append(
                {
                    "id": env_id,
                    "fingerprint": hashlib.sha256(f"{backend}{night}".encode()).hexdigest(),
                    "hostname": "gpu-node-1",
                    "device_kind": "cuda",
                    "device_name": "NVIDIA H100 80GB HBM3",
                    "cpu": "AMD EPYC 9454",
                    "python": "3.11.9",
                    "torch_version": "2.13.0" if backend == "torch" else None,
                    "jax_version": "0.10.2" if backend == "jax" else None,
                    "cuda": "12.4",
                    "driver": "550.54",
                    "git_commit": commit,
                    "git_dirty": False,
                    "details": {"backend": backend, "synthetic": True},
                    "created_at": when,
                }
            )
        sweep_id = night + 1
        sweep_rows.append(
            {
                "id": sweep_id,
                "name": f"nightly-{when:%Y-%m-%d}",
                "kind": "nightly",
                "track": "untuned",
                "tag": "nightly",
                "spec": {"synthetic": True},
                "status": "finished",
                "environment_id": env_ids[("torch", night)],
                "started_at": when,
                "finished_at": when + timedelta(hours=3),
                "report": None,
            }
        )
        for s_idx, (suite, _v, val_metric, t_metric, t_value, mode, budget) in enumerate(_SUITES):
            base_step = 1e-3 * (1 + s_idx)
            eval_every = max(1, budget // 40)
            for optimizer, (rel_steps, time_ratio, mem_factor, p_div) in _OPTIMIZERS.items():
                for backend, backend_speed in _BACKENDS.items():
                    regress = 1.3 if (optimizer == "fngd" and night >= nights - 3) else 1.0
                    for s in range(seeds):
                        if run_id >= runs:
                            break
                        run_id += 1
                        step_time = base_step * time_ratio * backend_speed * regress * rng.lognormal(0, 0.03)
                        row, rows = _run(
                            run_id,
                            rng,
                            suite=suite,
                            val_metric=val_metric,
                            target=(t_metric, t_value, mode),
                            budget=budget,
                            eval_every=eval_every,
                            rel_steps=rel_steps * rng.lognormal(0, 0.15),
                            p_div=p_div,
                            step_time=step_time,
                            n_evals=n_evals,
                            n_batch=n_batch,
                        )
                        mem = int(2**20 * (8 + 4 * s_idx) * mem_factor * rng.lognormal(0, 0.01))
                        oom = optimizer == "kfac" and suite == "synthetic-lm" and s == 0
                        row.update(
                            id=run_id,
                            key=hashlib.sha256(f"{run_id}".encode()).hexdigest()[:32],
                            sweep_id=sweep_id,
                            environment_id=env_ids[(backend, night)],
                            suite=suite,
                            suite_version=versions[suite],
                            optimizer=optimizer,
                            adapter_version=_adapter_version(optimizer, backend, night, nights),
                            backend=backend,
                            seed=s,
                            dtype="float32",
                            device="cuda:0",
                            tag="nightly",
                            track="untuned",
                            role="run",
                            trial=None,
                            config_hash=None,
                            hparams={"lr": 0.01 if optimizer == "sgd" else 1e-3, "damping": 1e-3},
                            spec={"suite": suite, "optimizer": optimizer, "backend": backend, "seed": s},
                            val_metric=val_metric,
                            target=f"{t_metric} {'>=' if mode == 'max' else '<='} {t_value:g}",
                            compile_time_s=float(rng.uniform(0.5, 3.0)) if backend == "jax" else 0.02,
                            init_time_s=0.05,
                            eval_time_s=0.3,
                            step_time_median_s=step_time,
                            step_time_mean_s=step_time * 1.02,
                            step_time_p10_s=step_time * 0.97,
                            step_time_p90_s=step_time * 1.05,
                            peak_memory_bytes=mem,
                            memory_kind="device peak (torch.cuda.max_memory_allocated)",
                            passes_per_step={"forward": 1.0, "backward": 1.0, "jvp": float(time_ratio > 3)},
                            started_at=when,
                            finished_at=when + timedelta(seconds=row["train_time_s"] + 1),
                            created_at=when + timedelta(minutes=run_id % 180),
                        )
                        if oom:
                            row.update(status="oom", error="CUDA out of memory. Tried to allocate 2.00 GiB")
                            row.update(steps_to_target=None, time_to_target_s=None)
                            rows = rows[: len(rows) // 4]
                        run_rows.append(row)
                        metric_rows.extend(rows)
                        key = (suite, optimizer, backend, "step_time_median_s")
                        history.setdefault(key, []).append(step_time)
        sweep_rows[-1]["report"] = _report(history, night, sweep_id)
    approx_rows = _approx_rows(rng, run_rows) if approx else []

    with store.engine.begin() as conn:
        conn.execute(insert(Environment), env_rows)
        conn.execute(insert(Sweep), sweep_rows)
        conn.execute(insert(Run), run_rows)
        names = ("run_id", "step", "time_s", "name", "value")
        chunk = 200_000
        for i in range(0, len(metric_rows), chunk):
            conn.execute(insert(Metric), [dict(zip(names, r)) for r in metric_rows[i : i + chunk]])
        if approx_rows:
            conn.execute(insert(ApproxQuality), approx_rows)
    return Generated(len(run_rows), len(metric_rows), len(sweep_rows), len(approx_rows), time.perf_counter() - t0)


def _run(
    run_id: int,
    rng: np.random.Generator,
    *,
    suite: str,
    val_metric: str,
    target: tuple[str, float, str],
    budget: int,
    eval_every: int,
    rel_steps: float,
    p_div: float,
    step_time: float,
    n_evals: int,
    n_batch: int,
) -> tuple[dict[str, Any], list[tuple[int, int, float, str, float | None]]]:
    """Summary columns and metric rows of one run (curves consistent with its summary).

    The loss decays exponentially and the validation metric meets the target around
    ``reach_step``; the run stops at the first evaluation that meets it, at a divergence or at
    an error, and its ``n_evals`` evaluations are spread over the steps it ran.
    """
    _metric, t_value, mode = target
    classification = val_metric == "val_accuracy"
    reach_step = rel_steps * 0.7 * budget
    rate = 3.0 / max(reach_step, 1.0)
    loss0 = 2.3 if classification else 1.0
    floor = 0.05 if classification else 0.2

    def curves(steps: np.ndarray, noise: bool) -> dict[str, np.ndarray]:
        train_loss = floor + (loss0 - floor) * np.exp(-rate * steps)
        jitter = rng.normal(0, 0.003, steps.size) if noise else 0.0
        if classification:
            val_acc = np.clip(1.0 - (1.0 - t_value) * np.exp(-rate * (steps - reach_step)) + jitter, 0.1, 1.0)
            return {
                "train_loss": train_loss,
                "train_accuracy": np.clip(val_acc + 0.01, 0.0, 1.0),
                "val_loss": train_loss * 1.1 + 0.02,
                "val_accuracy": val_acc,
            }
        val_loss = t_value * (0.85 + 0.15 * np.exp(-rate * (steps - reach_step))) * (1 + jitter)
        return {
            "train_loss": train_loss,
            "train_rmse": np.sqrt(2 * train_loss),
            "val_loss": val_loss,
            "val_rmse": np.sqrt(2 * val_loss),
        }

    grid = np.arange(0, budget + 1, eval_every)
    val = curves(grid, noise=False)[val_metric]
    met = val >= t_value if mode == "max" else val <= t_value
    status, end = "budget_exhausted", int(grid[-1])
    stt = tts = None
    err_text = None
    if met.any():
        status, end = "target_reached", int(grid[int(np.argmax(met))])
        stt, tts = end, end * step_time
    if rng.random() < p_div:
        diverged_at = int(rng.uniform(0.1, 0.9) * budget)
        if diverged_at < end:
            status, end, stt, tts = "diverged", diverged_at, None, None
            err_text = f"loss inf at step {diverged_at} (initial {loss0:.6g}, threshold {100 * loss0:.6g})"
    elif rng.random() < 0.005:
        status, end, stt, tts = "error", max(1, end // 2), None, None
        err_text = (
            "Traceback (most recent call last):\n  ...\n"
            "RuntimeError: linalg.cholesky: The factorization could not be completed"
        )
    steps_axis = np.linspace(0, end, n_evals).round().astype(int)
    times = steps_axis * step_time
    last = steps_axis.size
    series = curves(steps_axis, noise=True)
    rows: list[tuple[int, int, float, str, float | None]] = []
    for name, values in series.items():
        rows.extend(zip([run_id] * last, steps_axis.tolist(), times.tolist(), [name] * last, values.tolist()))
    bsteps = np.linspace(0, max(end - 1, 0), n_batch).round().astype(int)
    bloss = floor + (loss0 - floor) * np.exp(-rate * bsteps) * rng.lognormal(0, 0.1, bsteps.size)
    if status == "diverged":
        bloss[-1] = math.inf
    rows.extend(
        zip(
            [run_id] * bsteps.size,
            bsteps.tolist(),
            (bsteps * step_time).tolist(),
            ["train_loss_batch"] * bsteps.size,
            [None if not math.isfinite(v) else v for v in bloss.tolist()],
        )
    )
    final = {k: float(v[-1]) for k, v in series.items() if len(v)}
    best = float(series[val_metric].max() if mode == "max" else series[val_metric].min())
    summary = {
        "status": status,
        "error": err_text,
        "steps": end,
        "initial_train_loss": float(series["train_loss"][0]),
        "final_train_loss": final.get("train_loss"),
        "best_val_metric": best,
        "final_metrics": final,
        "steps_to_target": stt,
        "time_to_target_s": tts,
        "train_time_s": end * step_time,
    }
    return summary, rows


def _report(history: dict[tuple[str, str, str, str], list[float]], night: int, sweep_id: int) -> dict[str, Any]:
    """The nightly regression report (``db.models.Sweep.report`` format) against the night before."""
    items = []
    threshold = 1.1
    for (suite, optimizer, backend, metric), values in sorted(history.items()):
        seeds = len(values) // (night + 1) or 1
        current = float(np.median(values[-seeds:]))
        previous = float(np.median(values[-2 * seeds : -seeds])) if night else None
        ratio = current / previous if previous else None
        flag = "unchanged"
        if ratio is not None and ratio > threshold:
            flag = "slowdown"
        elif ratio is not None and ratio < 1 / threshold:
            flag = "speedup"
        items.append(
            {
                "suite": suite,
                "optimizer": optimizer,
                "backend": backend,
                "metric": metric,
                "previous": previous,
                "current": current,
                "ratio": ratio,
                "threshold": threshold,
                "p_value": None,
                "flag": flag,
                "detail": f"median of {seeds} seeds",
            }
        )
    flagged = sum(i["flag"] != "unchanged" for i in items)
    return {
        "previous_sweep_id": sweep_id - 1 if night else None,
        "generated_at": (datetime(2025, 1, 1, 6, tzinfo=UTC) + timedelta(days=night)).isoformat(),
        "items": items,
        "summary": {"flagged": flagged, "compared": len(items) if night else 0},
    }


def _approx_rows(rng: np.random.Generator, run_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """γ/γ_SGD rows on the last AdamW torch run of each suite (reference trajectories)."""
    methods = {"sgd": 1.0, "ef": 3.0, "ief": 0.3, "sf": 0.6, "kfac": 0.5, "fngd": 0.55, "egn": 0.35, "adamqlr": 0.8}
    refs: dict[str, dict[str, Any]] = {}
    for row in run_rows:
        if row["optimizer"] == "adamw" and row["backend"] == "torch" and row["seed"] == 0:
            refs[row["suite"]] = row
    out: list[dict[str, Any]] = []
    for ref in refs.values():
        steps = np.linspace(0, max(ref["steps"], 1), 5).astype(int)
        for checkpoint, step in enumerate(steps.tolist()):
            for method, level in methods.items():
                dampings = [None] if method in ("sgd", "adamqlr") else [1e-6, 1e-4, 1e-2, 1.0]
                for damping in dampings:
                    for batch in range(3):
                        d_effect = 1.0 if damping is None else 1.0 + 2.0 * damping / (damping + 1e-2)
                        ratio = 1.0 if method == "sgd" else level * d_effect * (1 + 0.1 * checkpoint)
                        ratio *= float(rng.lognormal(0, 0.05)) if method != "sgd" else 1.0
                        gamma = ratio * 5.0
                        out.append(
                            {
                                "run_id": ref["id"],
                                "checkpoint": checkpoint,
                                "step": step,
                                "method": method,
                                "damping": damping,
                                "batch": batch,
                                "gamma": gamma,
                                "gamma_ratio_sgd": ratio,
                                "dtg": 1.0,
                                "dtgd": gamma**2,
                                "update_norm": 1.0,
                                "grad_norm_imbalance": float(rng.uniform(1, 10)),
                                "cos_ng": float(np.clip(1 - 0.2 * ratio, -1, 1)),
                                "rel_err_ng": float(0.2 * ratio),
                                "extra": {},
                            }
                        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="database URL or SQLite file path (created)")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    store = open_store(args.db)
    out = generate(store, runs=args.runs, points=args.points, seed=args.seed)
    store.dispose()
    print(json.dumps(out.__dict__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
