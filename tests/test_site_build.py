"""The static site, built from a database of several suites, optimizers, seeds and statuses.

:func:`make_results_db` writes the runs through :meth:`db.store.Store.save_run` as the harness
does, with hostile text in run tags, error messages, hyperparameter values, an optimizer name
and a host name. The expected scores are worked out by hand next to the data. The browser
tests (``test_site_browser.py``) open the same site in Chromium.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import pytest
from sqlalchemy import update

from db.models import Sweep
from db.store import Store, open_store
from harness.runner import RunResult, RunSpec

SCRIPT_TAG = "<script>alert(1)</script>"
IMG_ONERROR = '"><img src=x onerror="window.__pwned=1">'
EVIL_OPTIMIZER = 'x"><svg onload=alert(1)>'
FORMULA_TAG = '=HYPERLINK("http://evil.example","x")'
HOSTILE = (SCRIPT_TAG, IMG_ONERROR, EVIL_OPTIMIZER, "<b>bold</b>", "<i>host</i>")

ENV_CPU = {
    "fingerprint": "env-cpu-torch",
    "hostname": "<i>host</i>",
    "device_kind": "cpu",
    "device_name": "Test CPU",
    "cpu": "Test CPU",
    "python": "3.11.7",
    "torch": "2.13.0",
    "git_commit": "0123456789abcdef",
    "git_dirty": True,
}
ENV_JAX = {**ENV_CPU, "fingerprint": "env-cpu-jax", "torch": None, "jax": "0.10.2"}
ENV_GPU = {**ENV_CPU, "fingerprint": "env-gpu", "device_kind": "cuda", "device_name": "Nightly GPU"}


def result(
    suite: str,
    optimizer: str,
    seed: int,
    *,
    ttt: float | None,
    status: str | None = None,
    backend: str = "torch",
    step_time: float = 1e-3,
    suite_version: int = 1,
    adapter_version: str = "v1",
    tag: str | None = None,
    error: str | None = None,
    env: dict[str, Any] | None = None,
    hparams: dict[str, Any] | None = None,
    val_metric: str = "val_accuracy",
    target: str | None = "val_accuracy >= 0.9",
    memory: int = 2**20,
) -> RunResult:
    """A run whose time-to-target is ``ttt`` seconds (``None``: missed) at ``step_time`` per step.

    Evaluations every 20 steps; the run stops at the target, else after 200 steps.
    """
    steps_to_target = None if ttt is None else round(ttt / step_time)
    last = steps_to_target if steps_to_target is not None else 200
    if status is None:
        status = "target_reached" if ttt is not None else "budget_exhausted"
    higher = not val_metric.endswith("loss")
    metrics: list[tuple[int, float, str, float]] = []
    eval_steps = sorted({*range(0, last, 20), last})
    for st in eval_steps:
        frac = st / max(last, 1)
        loss = 2.0 * (1.0 - 0.9 * frac) + 0.01 * seed
        metrics.append((st, st * step_time, "train_loss", loss))
        metrics.append((st, st * step_time, val_metric, 0.3 + 0.65 * frac if higher else 1.0 - 0.7 * frac))
    for st in range(0, max(last, 1), 10):
        metrics.append((st, st * step_time, "train_loss_batch", 2.0 * (1.0 - 0.85 * st / max(last, 1))))
        metrics.append((st, st * step_time, "opt_lr", 0.1))
    spec = RunSpec(suite=suite, optimizer=optimizer, backend=backend, seed=seed, tag=tag, hparams=dict(hparams or {}))
    return RunResult(
        spec=spec,
        status=status,
        error=error,
        key=hashlib.sha1(f"{suite}/{optimizer}/{backend}/{seed}/{status}/{ttt}/{tag}".encode()).hexdigest()[:32],
        suite_version=suite_version,
        adapter_version=adapter_version,
        hparams=dict(hparams or {"lr": 0.1}),
        device="cpu",
        steps=last,
        initial_train_loss=2.0,
        final_train_loss=metrics[-4][3] if len(metrics) >= 4 else 2.0,
        final_metrics={"train_loss": 0.5, val_metric: 0.9},
        val_metric=val_metric,
        best_val_metric=0.95 if higher else 0.3,
        target=target,
        steps_to_target=steps_to_target,
        time_to_target_s=ttt,
        train_time_s=last * step_time,
        compile_time_s=0.01,
        step_time_median_s=step_time,
        step_time_mean_s=step_time,
        step_time_p10_s=step_time,
        step_time_p90_s=step_time,
        peak_memory_bytes=memory,
        memory_kind="process peak RSS (CPU)",
        passes_per_step={"forward": 1.0, "backward": 1.0},
        metrics=metrics,
        environment=dict(env or ENV_CPU),
        started_at="2025-03-01T10:00:00+00:00",
        finished_at="2025-03-01T10:05:00+00:00",
    )


def make_results_db(path: Path | str) -> tuple[Store, dict[str, Any]]:
    """Runs of three suites (one unknown to the catalogue), five optimizers, seeds, statuses,
    two backends, two devices, both tracks, nightly sweeps with reports, and approx rows.

    Untuned board (torch, Test CPU), time-to-target medians and expected scores (τ_max = 4):

    =============  ===========  ==============  ============  =============
    optimizer      tiny-ce      tiny-mse        custom-suite  score
    =============  ===========  ==============  ============  =============
    sgd            2.2 (r=2)    3.0 (r=2)       5.0 (r=1)     7/9
    adamw          1.1 (r=1)    miss            not run       1/3
    ief            miss (2/3    1.5 (r=1)       not run       1/3
                   diverged)
    EVIL           miss (OOM)   not run         not run       0
    =============  ===========  ==============  ============  =============
    """
    store = open_store(path)
    ids: dict[str, Any] = {}
    sweep = store.create_sweep("main sweep", kind="sweep", tag=SCRIPT_TAG)
    ids["sweep"] = sweep
    save = store.save_run
    # A stale adamw run (older suite version) that would win tiny-ce if it were scored.
    ids["stale"] = save(result("tiny-ce", "adamw", 0, ttt=0.1, suite_version=0), sweep_id=sweep)
    # An older sgd seed-0 run superseded by the newer one below.
    ids["superseded"] = save(result("tiny-ce", "sgd", 0, ttt=9.0), sweep_id=sweep)
    for seed, t in enumerate((2.0, 2.2, 2.4)):
        ids[f"sgd-ce-{seed}"] = save(
            result("tiny-ce", "sgd", seed, ttt=t, tag=SCRIPT_TAG if seed == 1 else None), sweep_id=sweep
        )
    for seed, t in enumerate((1.0, 1.1, 1.2)):
        save(result("tiny-ce", "adamw", seed, ttt=t, step_time=1.5e-3, tag=FORMULA_TAG), sweep_id=sweep)
    ief_hparams = {"lr": 0.1, "note": "<b>bold</b>"}
    ids["ief-reached"] = save(result("tiny-ce", "ief", 0, ttt=0.8, step_time=2e-3, hparams=ief_hparams), sweep_id=sweep)
    for seed in (1, 2):
        ids[f"ief-diverged-{seed}"] = save(
            result(
                "tiny-ce",
                "ief",
                seed,
                ttt=None,
                status="diverged",
                step_time=2e-3,
                error=f"loss nan at step 57 {IMG_ONERROR}",
                hparams=ief_hparams,
            ),
            sweep_id=sweep,
        )
    ids["evil"] = save(
        result("tiny-ce", EVIL_OPTIMIZER, 0, ttt=None, status="oom", error="out of memory " + SCRIPT_TAG),
        sweep_id=sweep,
    )
    mse: dict[str, Any] = {"val_metric": "val_loss", "target": "val_loss <= 0.35"}
    for seed in range(3):
        save(result("tiny-mse", "sgd", seed, ttt=3.0, **mse), sweep_id=sweep)
        save(result("tiny-mse", "adamw", seed, ttt=None, step_time=1.5e-3, **mse), sweep_id=sweep)
        save(result("tiny-mse", "ief", seed, ttt=1.5, step_time=2e-3, **mse), sweep_id=sweep)
    ids["interrupted"] = save(result("tiny-mse", "sgd", 3, ttt=None, status="interrupted", **mse), sweep_id=sweep)
    ids["crashed"] = save(
        result("tiny-mse", "ief", 3, ttt=None, status="crashed", error=IMG_ONERROR, **mse), sweep_id=sweep
    )
    ids["error"] = save(
        result(
            "tiny-mse",
            "adamw",
            4,
            ttt=None,
            status="error",
            error="Traceback (most recent call last):\n  File <x>\nRuntimeError: " + IMG_ONERROR,
            **mse,
        ),
        sweep_id=sweep,
    )
    # A suite this installation does not know, run outside any sweep.
    custom: dict[str, Any] = {"target": "val_accuracy >= 0.5", "suite_version": 3}
    ids["custom"] = save(result("custom-suite", "sgd", 0, ttt=5.0, step_time=2e-3, **custom))
    # JAX board: sgd 2.0, adamw 1.0 on tiny-ce.
    jax_sweep = store.create_sweep("jax sweep")
    for seed in range(3):
        save(result("tiny-ce", "sgd", seed, ttt=2.0, backend="jax", env=ENV_JAX), sweep_id=jax_sweep)
        save(result("tiny-ce", "adamw", seed, ttt=1.0, backend="jax", env=ENV_JAX), sweep_id=jax_sweep)
    # Tuned track: trials (not scored; one would win) and re-runs of the chosen configurations.
    tune = store.create_sweep("tune", kind="tune", track="tuned")
    trial_times: tuple[float | None, ...] = (0.5, 3.0, None)
    for trial, trial_ttt in enumerate(trial_times):
        save(
            result("tiny-ce", "sgd", 0, ttt=trial_ttt, hparams={"lr": 0.1 * (trial + 1)}),
            sweep_id=tune,
            track="tuned",
            role="trial",
            trial=trial,
        )
    for seed in range(3):
        save(result("tiny-ce", "sgd", seed, ttt=1.5), sweep_id=tune, track="tuned", role="rerun")
        save(result("tiny-ce", "adamw", seed, ttt=1.0), sweep_id=tune, track="tuned", role="rerun")
    # Nightly sweeps on another device, with regression reports.
    nightly = []
    for night, step_time in enumerate((1e-3, 1e-3, 1.4e-3)):
        sid = store.create_sweep(f"nightly-{night}", kind="nightly")
        nightly.append(sid)
        for opt, factor in (("sgd", 1.0), ("adamw", 1.5)):
            save(
                result("tiny-ce", opt, 0, ttt=2.0 * factor, step_time=step_time * factor, env=ENV_GPU),
                sweep_id=sid,
            )
        report = {
            "previous_sweep_id": nightly[-2] if night else None,
            "generated_at": f"2025-03-0{night + 1}T06:00:00+00:00",
            "items": [
                {
                    "suite": "tiny-ce",
                    "optimizer": "sgd",
                    "backend": "torch",
                    "metric": "step_time_median_s",
                    "previous": 1e-3 if night else None,
                    "current": step_time,
                    "ratio": step_time / 1e-3 if night else None,
                    "threshold": 1.1,
                    "p_value": None,
                    "flag": "slowdown" if night == 2 else "unchanged",
                    "detail": "median of 1 seed " + SCRIPT_TAG,
                }
            ],
            "summary": {"flagged": int(night == 2), "compared": 1 if night else 0},
        }
        with store.engine.begin() as conn:
            conn.execute(update(Sweep).where(Sweep.id == sid).values(report=report))
    ids["nightly"] = nightly
    # Approximation quality on the tiny-ce reference run: a damping sweep for ief.
    rows = []
    for checkpoint, step in enumerate((0, 100, 200)):
        for batch in range(2):
            rows.append(_approx("sgd", checkpoint, step, batch, None, 1.0))
            rows.append(_approx("ef", checkpoint, step, batch, 1e-3, 3.0 + checkpoint))
            for damping, ratio in ((1e-4, 0.2), (1e-3, 0.3), (1e-3, 0.3), (1e-1, 0.8)):
                rows.append(_approx("ief", checkpoint, step, batch, damping, ratio))
    store.save_approx_rows(ids["sgd-ce-1"], rows)
    # A newer evaluation without a sweep: the stage view uses it.
    plain = []
    for checkpoint, step in enumerate((0, 100, 200)):
        for batch in range(2):
            plain.append(_approx("sgd", checkpoint, step, batch, None, 1.0))
            plain.append(_approx("ief", checkpoint, step, batch, 1e-3, 0.25))
            ef = _approx("ef", checkpoint, step, batch, 1e-3, 3.0 + checkpoint)
            if checkpoint == 2 and batch == 0:
                ef["extra"] = {"descent": False}
            plain.append(ef)
    store.save_approx_rows(ids["sgd-ce-2"], plain)
    return store, ids


def _approx(method: str, checkpoint: int, step: int, batch: int, damping: float | None, ratio: float) -> dict[str, Any]:
    return {
        "checkpoint": checkpoint,
        "step": step,
        "method": method,
        "damping": damping,
        "batch": batch,
        "gamma": 2.0 * ratio,
        "gamma_ratio_sgd": ratio,
        "cos_ng": 1.0 - 0.1 * ratio,
        "rel_err_ng": 0.1 * ratio,
        "grad_norm_imbalance": 3.0,
        "extra": {"note": SCRIPT_TAG},
    }


# --------------------------------------------------------------------------- helpers


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()
        self.scripts_inline = 0
        self.event_attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        if d.get("id"):
            self.ids.add(str(d["id"]))
        for name in ("href", "src"):
            if d.get(name):
                self.refs.append(d[name] or "")
        if tag == "script" and not d.get("src"):
            self.scripts_inline += 1
        self.event_attrs += [k for k in d if k.startswith("on")]


def parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def internal_link_problems(site: Path) -> list[str]:
    """Relative links and sources that do not resolve to a file (and fragment) of the site."""
    problems = []
    parsed = {page: parse(page) for page in site.rglob("*.html")}
    for page, links in parsed.items():
        for ref in links.refs:
            if re.match(r"^[a-z]+:", ref):
                problems.append(f"{page.relative_to(site)}: absolute or external reference {ref}")
                continue
            target, fragment = urldefrag(ref)
            resolved = (page.parent / unquote(target)).resolve() if target else page
            if not resolved.is_file():
                problems.append(f"{page.relative_to(site)}: {ref} does not exist")
            elif fragment and resolved.suffix == ".html" and fragment not in parsed[resolved].ids:
                problems.append(f"{page.relative_to(site)}: {ref} has no element #{fragment}")
    return problems


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], Store]]:
    from leaderboard.site import build

    tmp = tmp_path_factory.mktemp("site")
    store, ids = make_results_db(tmp / "results.db")
    build(store, tmp / "site", jobs=1)
    yield tmp / "site", ids, store
    store.dispose()


def load_json(site: Path, name: str) -> list[dict[str, Any]]:
    return json.loads((site / "data" / f"{name}.json").read_text())


# --------------------------------------------------------------------------- tests


def test_every_page_kind_is_written(built: tuple[Path, dict[str, Any], Store]) -> None:
    site, _ids, store = built
    for page in ("index.html", "suites.html", "optimizers.html", "approx.html", "history.html", "data.html"):
        assert (site / page).is_file(), page
    for suite in ("tiny-ce", "tiny-mse", "custom-suite"):
        assert (site / "suites" / f"{suite}.html").is_file()
        assert (site / "suites" / f"{suite}-runs.html").is_file()
        assert (site / "suites" / f"{suite}.csv").is_file()
    for opt in ("sgd", "adamw", "ief"):
        assert (site / "optimizers" / f"{opt}.html").is_file()
    from db import queries

    run_ids = set(queries.runs_frame(store)["id"])
    assert {int(p.stem) for p in (site / "runs").glob("*.html")} == run_ids
    boards = sorted(p.name for p in (site / "boards").glob("*.html"))
    assert len(boards) == 4  # untuned torch CPU, untuned torch GPU (nightly), untuned jax, tuned torch
    assert (site / ".ngbench-site").is_file()
    assert list((site / "plots").glob("*.svg"))


def test_scores_match_the_hand_computed_profiles(built: tuple[Path, dict[str, Any], Store]) -> None:
    site, _, _ = built
    scores = load_json(site, "scores")
    cpu = {
        s["optimizer"]: s
        for s in scores
        if s["track"] == "untuned" and s["hardware"] == "Test CPU" and s["backend"] == "torch"
    }
    assert cpu["sgd"]["score_time"] == pytest.approx(7 / 9)
    assert cpu["adamw"]["score_time"] == pytest.approx(1 / 3)
    assert cpu["ief"]["score_time"] == pytest.approx(1 / 3)
    assert cpu[EVIL_OPTIMIZER]["score_time"] == 0.0
    assert cpu["sgd"]["suites"] == 3 and cpu["sgd"]["suites_reached"] == 3
    # A suite an optimizer did not run counts as missed, and the board says how many it ran.
    assert {o: cpu[o]["suites_run"] for o in ("sgd", "adamw", "ief", EVIL_OPTIMIZER)} == {
        "sgd": 3,
        "adamw": 2,
        "ief": 2,
        EVIL_OPTIMIZER: 1,
    }
    overview = (site / "index.html").read_text()
    assert "1/3</td>" not in overview and '1/3 <span class="small" title="a suite an optimizer did not run' in overview
    assert "(ran 2)</span>" in overview and "3/3</td>" in overview
    jax = {s["optimizer"]: s for s in scores if s["backend"] == "jax"}
    assert jax["adamw"]["score_time"] == 1.0
    assert jax["sgd"]["score_time"] == pytest.approx(2 / 3)  # ratio 2 on the one suite
    tuned = {s["optimizer"]: s for s in scores if s["track"] == "tuned"}
    # Re-runs only: sgd 1.5 vs adamw 1.0 (the 0.5 s trial is not scored).
    assert tuned["sgd"]["score_time"] == pytest.approx((4 - 1.5) / 3)
    assert tuned["adamw"]["score_time"] == 1.0


def test_matrix_reports_medians_misses_and_failures(built: tuple[Path, dict[str, Any], Store]) -> None:
    site, _, _ = built
    cells = {
        (c["optimizer"], c["suite"]): c
        for c in load_json(site, "matrix")
        if c["track"] == "untuned" and c["hardware"] == "Test CPU" and c["backend"] == "torch"
    }
    # Stale (0.1 s) and superseded (9 s) runs do not count; newest seed-0 run (2.0 s) does.
    assert cells[("sgd", "tiny-ce")]["time_to_target_s"] == pytest.approx(2.2)
    assert cells[("adamw", "tiny-ce")]["time_to_target_s"] == pytest.approx(1.1)
    assert cells[("adamw", "tiny-ce")]["ratio_to_best"] == 1.0
    assert cells[("ief", "tiny-ce")]["time_to_target_s"] == "inf"
    assert cells[("ief", "tiny-ce")]["status"] == "reached 1/3 · diverged 2/3"
    # The interrupted sgd run is not counted; the crashed ief run is (a miss among four seeds).
    assert cells[("sgd", "tiny-mse")]["status"] == "3/3 reached"
    assert "crashed 1/4" in cells[("ief", "tiny-mse")]["status"]
    assert cells[("ief", "tiny-mse")]["time_to_target_s"] == pytest.approx(1.5)
    assert cells[("adamw", "tiny-mse")]["status"] == "missed 3/4 · error 1/4"
    assert cells[("adamw", "custom-suite")]["status"] == "none"
    entries = load_json(site, "entries")
    cpu = [e for e in entries if e["track"] == "untuned" and e["backend"] == "torch" and e["hardware"] == "Test CPU"]
    sgd = next(e for e in cpu if e["optimizer"] == "sgd" and e["suite"] == "tiny-ce")
    assert (sgd["time_to_target_min_s"], sgd["time_to_target_max_s"]) == (2.0, 2.4)  # not the superseded 9 s
    ief = next(e for e in cpu if e["optimizer"] == "ief" and e["suite"] == "tiny-ce")
    assert ief["time_to_target_max_s"] == "inf"


def test_stale_superseded_interrupted_and_trial_runs_are_marked_not_scored(
    built: tuple[Path, dict[str, Any], Store],
) -> None:
    site, ids, _ = built
    runs = {r["id"]: r for r in load_json(site, "runs")}
    assert runs[ids["stale"]]["stale"] and not runs[ids["stale"]]["scored"]
    assert "suite v0, current v1" in runs[ids["stale"]]["stale_reason"]
    assert runs[ids["superseded"]]["superseded"] and not runs[ids["superseded"]]["scored"]
    assert not runs[ids["interrupted"]]["scored"]
    assert runs[ids["sgd-ce-0"]]["scored"]
    trials = [r for r in runs.values() if r["role"] == "trial"]
    assert len(trials) == 3 and not any(r["scored"] for r in trials)
    page = (site / "runs" / f"{ids['stale']}.html").read_text()
    assert "Stale: suite v0, current v1" in page
    suite_page = (site / "suites" / "tiny-ce.html").read_text()
    assert "Tuning trials" in suite_page


def test_step_time_ratio_to_sgd_uses_the_same_sweep_else_the_environment(
    built: tuple[Path, dict[str, Any], Store],
) -> None:
    site, ids, _ = built
    runs = load_json(site, "runs")
    adamw = next(
        r
        for r in runs
        if r["optimizer"] == "adamw" and r["suite"] == "tiny-ce" and r["sweep_id"] == ids["sweep"] and not r["stale"]
    )
    assert adamw["sgd_ratio"] == pytest.approx(1.5)
    assert adamw["sgd_ref"] == "sweep"
    custom = next(r for r in runs if r["suite"] == "custom-suite")
    assert custom["sgd_ref"] == "environment" and custom["sgd_ratio"] == pytest.approx(1.0)
    entries = load_json(site, "entries")
    ief = next(e for e in entries if e["optimizer"] == "ief" and e["suite"] == "tiny-ce" and e["backend"] == "torch")
    assert ief["sgd_ratio"] == pytest.approx(2.0)


def test_hostile_text_is_escaped_everywhere(built: tuple[Path, dict[str, Any], Store]) -> None:
    site, ids, _ = built
    for path in [*site.rglob("*.html"), *site.rglob("*.svg")]:
        text = path.read_text(encoding="utf-8")
        for raw in ("<script>alert", "<img src=x", "<svg onload", "<b>bold</b>", "<i>host</i>"):
            assert raw not in text, f"{raw!r} unescaped in {path.relative_to(site)}"
        parsed = parse(path) if path.suffix == ".html" else None
        if parsed is not None:
            assert parsed.scripts_inline == 0, path
            assert parsed.event_attrs == [], path
    run_page = (site / "runs" / f"{ids['sgd-ce-1']}.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run_page
    error_page = (site / "runs" / f"{ids['ief-diverged-1']}.html").read_text()
    assert "&lt;img src=x onerror=" in error_page and "&lt;b&gt;bold&lt;/b&gt;" in error_page
    evil = list((site / "optimizers").glob("x-*.html"))
    assert len(evil) == 1 and "/" not in evil[0].name


def test_every_internal_link_resolves_and_nothing_is_external(built: tuple[Path, dict[str, Any], Store]) -> None:
    site, _, _ = built
    assert internal_link_problems(site) == []


def test_csv_exports_neutralise_formulas_and_json_keeps_the_text(built: tuple[Path, dict[str, Any], Store]) -> None:
    site, _, _ = built
    with open(site / "data" / "runs.csv", newline="", encoding="utf-8") as f:
        tags = [row["tag"] for row in csv.DictReader(f)]
    assert "'" + FORMULA_TAG in tags and FORMULA_TAG not in tags
    assert FORMULA_TAG in [r["tag"] for r in load_json(site, "runs")]
    with open(site / "data" / "matrix.csv", newline="", encoding="utf-8") as f:
        values = {row["time_to_target_s"] for row in csv.DictReader(f)}
    assert "inf" in values


def test_history_flags_the_slowdown_from_the_report(built: tuple[Path, dict[str, Any], Store]) -> None:
    site, _ids, _ = built
    history = load_json(site, "history")
    sgd = [h for h in history if h["optimizer"] == "sgd"]
    assert [h["step_time_median_s"] for h in sgd] == pytest.approx([1e-3, 1e-3, 1.4e-3])
    assert [h["flagged"] for h in sgd] == [False, False, True]
    page = (site / "history.html").read_text()
    assert "the latest <strong>nightly-2</strong>" in page and "flagged 1." in page
    assert '<span class="flagword slowdown">slowdown</span>' in page


def test_approx_page_uses_the_plain_evaluation_and_shows_the_sweep(built: tuple[Path, dict[str, Any], Store]) -> None:
    site, ids, _ = built
    rows = load_json(site, "approx")
    # Stages from the newer evaluation without a sweep (run sgd-ce-2), not the sweep's 0.3.
    ief = [r for r in rows if r["method"] == "ief"]
    assert {r["damping"] for r in ief} == {1e-3}
    assert [r["median"] for r in ief] == pytest.approx([0.25, 0.25, 0.25])
    ef = [r for r in rows if r["method"] == "ef"]
    assert [r["median"] for r in ef] == pytest.approx([3.0, 4.0, 5.0])
    assert [r["uphill"] for r in ef] == [0, 0, 1]
    assert list((site / "plots").glob("damping-tiny-ce-*.svg"))
    page = (site / "approx.html").read_text()
    assert f'Damping sweep: run <a href="runs/{ids["sgd-ce-1"]}.html">' in page
    assert f'Stages: run <a href="runs/{ids["sgd-ce-2"]}.html">' in page


def test_track_filter_builds_only_that_track(tmp_path: Path, built: tuple[Path, dict[str, Any], Store]) -> None:
    from leaderboard.site import build

    _, _, store = built
    build(store, tmp_path / "untuned", tracks=["untuned"], jobs=1)
    scores = load_json(tmp_path / "untuned", "scores")
    assert scores and {s["track"] for s in scores} == {"untuned"}


def test_current_adapter_versions_from_the_caller_make_old_runs_stale(
    tmp_path: Path, built: tuple[Path, dict[str, Any], Store]
) -> None:
    from leaderboard.site import build

    _, _, store = built
    build(store, tmp_path / "s", current_adapters={("adamw", "torch"): "v2"}, jobs=1)
    runs = load_json(tmp_path / "s", "runs")
    assert all(r["stale"] for r in runs if r["optimizer"] == "adamw" and r["backend"] == "torch")
    assert not any(r["stale"] for r in runs if r["optimizer"] == "adamw" and r["backend"] == "jax")


def test_parallel_build_writes_the_same_pages(tmp_path: Path, built: tuple[Path, dict[str, Any], Store]) -> None:
    from leaderboard.site import build

    site, _, store = built
    report = build(store, tmp_path / "parallel", jobs=2)
    serial = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    parallel = sorted(
        str(p.relative_to(tmp_path / "parallel")) for p in (tmp_path / "parallel").rglob("*") if p.is_file()
    )
    assert serial == parallel
    assert report.pages == len([p for p in parallel if p.endswith(".html")])

    def body(path: Path) -> str:  # the page without its "Built <time>" footer
        return path.read_text().split("<footer>")[0]

    for rel in [p for p in serial if p.startswith(("runs/", "suites/", "index"))]:
        assert body(tmp_path / "parallel" / rel) == body(site / rel), rel


def test_an_empty_database_builds_a_site_that_says_so(tmp_path: Path) -> None:
    from leaderboard.site import build

    store = open_store(tmp_path / "empty.db")
    report = build(store, tmp_path / "site", jobs=1)
    store.dispose()
    index = (tmp_path / "site" / "index.html").read_text()
    assert "No results yet" in index
    for page in ("suites.html", "optimizers.html", "approx.html", "history.html", "data.html"):
        assert (tmp_path / "site" / page).is_file()
    assert json.loads((tmp_path / "site" / "data" / "runs.json").read_text()) == []
    assert internal_link_problems(tmp_path / "site") == []
    assert report.runs == 0


def test_a_failed_build_leaves_the_previous_site_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from leaderboard import site as site_module
    from leaderboard.pages import exports

    store = open_store(tmp_path / "r.db")
    store.save_run(result("tiny-ce", "sgd", 0, ttt=1.0))
    site_module.build(store, tmp_path / "site", jobs=1)
    before = (tmp_path / "site" / "index.html").read_text()

    def boom(ctx: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(exports, "write", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        site_module.build(store, tmp_path / "site", jobs=1)
    assert (tmp_path / "site" / "index.html").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".site.")] == []  # no staging left
    store.dispose()


def test_an_optimizer_is_scored_by_its_fastest_configuration_among_those_with_most_seeds(tmp_path: Path) -> None:
    from leaderboard import data

    store = open_store(tmp_path / "r.db")
    for seed in range(3):
        store.save_run(result("tiny-ce", "sgd", seed, ttt=2.0, hparams={"lr": 0.1}))
        store.save_run(result("tiny-ce", "sgd", seed, ttt=1.0, hparams={"lr": 0.3}))
    store.save_run(result("tiny-ce", "sgd", 0, ttt=0.2, hparams={"lr": 0.9}))  # one lucky seed
    d = data.load(store, suites={})
    store.dispose()
    entries = d.entries.set_index("config_label")
    assert bool(entries.loc["lr=0.3", "chosen"]) and entries.loc["lr=0.3", "configs"] == 2
    assert not entries.loc["lr=0.9", "chosen"] and not entries.loc["lr=0.1", "chosen"]
    assert entries.loc["lr=0.3", "ttt"] == 1.0


def test_the_leaderboard_imports_no_framework(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from db.store import open_store\n"
        "from leaderboard.site import build\n"
        f"build(open_store({str(tmp_path / 'x.db')!r}), {str(tmp_path / 'site')!r}, jobs=1)\n"
        "frameworks = ('torch', 'jax', 'backends.torch', 'backends.jax')\n"
        "prefixes = ('backends.torch.', 'backends.jax.')\n"
        "bad = sorted(m for m in sys.modules if m in frameworks or m.startswith(prefixes))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# --------------------------------------------------------------------------- command line


def test_cli_build_and_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    store = open_store(tmp_path / "r.db")
    store.save_run(result("tiny-ce", "sgd", 0, ttt=1.0))
    store.dispose()
    assert (
        main(
            ["site", "build", "--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "s"), "--no-registry", "-j", "1"]
        )
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "s" / "index.html").is_file()

    assert main(["site", "build", "--db", str(tmp_path / "missing" / "r.db"), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ngbench: error: cannot open database")
    assert not (tmp_path / "t").exists()

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert (
        main(["site", "build", "--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "mine"), "--no-registry"]) == 2
    )
    assert "refusing to replace" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"

    assert main(["site", "serve", "--dir", str(tmp_path / "nothing")]) == 2
    assert "holds no site" in capsys.readouterr().err


def test_cli_method_cards_come_from_the_registry() -> None:
    from harness.site import method_metadata

    infos, versions = method_metadata()
    sgd = infos["sgd"]
    assert "momentum" in {h.name for h in sgd.hyperparams}
    lr = next(h for h in sgd.hyperparams if h.name == "lr")
    assert lr.default == 0.01 and lr.range == "> 0" and lr.doc == "learning rate"
    assert sgd.search_space["lr"].startswith("log-uniform")
    assert ("sgd", "torch") in versions and sgd.versions["torch"] == versions[("sgd", "torch")]


@pytest.mark.postgres
def test_the_site_builds_from_postgresql_with_the_same_numbers(
    pg_url: str, tmp_path: Path, built: tuple[Path, dict[str, Any], Store]
) -> None:
    from leaderboard.site import build

    site, _, _ = built
    store, _ = make_results_db(pg_url)  # type: ignore[arg-type]
    try:
        build(store, tmp_path / "pg", jobs=2)  # workers read the run pages' series over their own connections
    finally:
        store.dispose()
    for name in ("scores", "matrix", "approx"):
        assert load_json(tmp_path / "pg", name) == load_json(site, name), name
    pages = sorted(p.name for p in (tmp_path / "pg" / "runs").glob("*.html"))
    assert pages == sorted(p.name for p in (site / "runs").glob("*.html"))
    page = (tmp_path / "pg" / "runs" / pages[0]).read_text()
    assert "<polyline" in page  # the curves were read from PostgreSQL in a worker


def test_a_board_with_tuning_trials_only_shows_them(tmp_path: Path) -> None:
    from leaderboard.site import build

    store = open_store(tmp_path / "r.db")
    for trial in range(2):
        store.save_run(
            result("tiny-ce", "sgd", 0, ttt=1.0 + trial, hparams={"lr": 0.1 * (trial + 1)}),
            track="tuned",
            role="trial",
            trial=trial,
        )
    build(store, tmp_path / "site", jobs=1)
    store.dispose()
    page = (tmp_path / "site" / "suites" / "tiny-ce.html").read_text()
    assert "Tuning trials" in page and "No scored runs on this board yet" in page
    assert page.count('href="../runs/') >= 2
    assert internal_link_problems(tmp_path / "site") == []


def test_runs_with_a_shorter_budget_or_finer_evaluation_are_shown_but_not_scored(tmp_path: Path) -> None:
    from dataclasses import replace

    from leaderboard.site import build

    store = open_store(tmp_path / "r.db")
    store.save_run(result("tiny-ce", "sgd", 0, ttt=2.0))
    quick = result("tiny-ce", "adamw", 0, ttt=0.5)
    quick.spec = replace(quick.spec, steps=50)
    fine = result("tiny-ce", "ief", 0, ttt=0.5)
    fine.spec = replace(fine.spec, eval_every=1)
    ids = [store.save_run(quick), store.save_run(fine)]
    build(store, tmp_path / "site", jobs=1)
    store.dispose()
    runs = {r["id"]: r for r in load_json(tmp_path / "site", "runs")}
    assert runs[ids[0]]["protocol_note"] == "step budget 50 (the suite's: 200)" and not runs[ids[0]]["scored"]
    assert runs[ids[1]]["protocol_note"] == "evaluation cadence 1 (the suite's: 20)" and not runs[ids[1]]["scored"]
    assert [s["optimizer"] for s in load_json(tmp_path / "site", "scores")] == ["sgd"]
    page = (tmp_path / "site" / "runs" / f"{ids[0]}.html").read_text()
    assert "its protocol differs from the suite's: step budget 50 (the suite&#39;s: 200)" in page


def test_a_suite_whose_runs_recorded_no_memory_kind_says_not_measured(tmp_path: Path) -> None:
    """The suite page once crashed (``first`` of an empty sequence) when no run of a section
    had recorded what its peak memory measures."""
    import dataclasses

    from leaderboard.site import build

    store = open_store(tmp_path / "r.db")
    for seed in range(2):
        run = dataclasses.replace(result("tiny-ce", "sgd", seed, ttt=1.0), memory_kind=None, peak_memory_bytes=None)
        store.save_run(run)
    build(store, tmp_path / "site", jobs=1)
    store.dispose()
    page = (tmp_path / "site" / "suites" / "tiny-ce.html").read_text()
    assert "Peak memory: not measured." in page


def test_scores_carry_intervals_and_ranks_with_ties(built: tuple[Path, dict[str, Any], Store]) -> None:
    """Every score has a 95 % interval that contains it; ranks share a number where the time
    intervals overlap; the board says when too few seeds make every rank untestable."""
    site, _, _ = built
    scores = load_json(site, "scores")
    assert scores
    for s in scores:
        if s["score_time"] is None:
            continue
        assert s["score_time_low"] <= s["score_time"] + 1e-12 <= s["score_time_high"] + 2e-12
        assert s["score_steps_low"] <= s["score_steps"] + 1e-12 <= s["score_steps_high"] + 2e-12
    cpu = [s for s in scores if s["track"] == "untuned" and s["hardware"] == "Test CPU" and s["backend"] == "torch"]
    ranks = {s["optimizer"]: s["rank"] for s in cpu}
    # The evil optimizer misses everything: its interval is [0, 0], below everyone who reached.
    assert ranks[EVIL_OPTIMIZER] == max(ranks.values())
    assert min(ranks.values()) == 1
    page = (site / "index.html").read_text()
    assert "no rank on this board can be significant" in page or "fastest, significant" in page
    runs = load_json(site, "runs")
    assert "flops_to_target" in runs[0]
