"""The tuned track end to end: ``ngbench tune`` runs the trials in workers, stores them, picks the
configuration the stored trials select, re-runs it on the scoring seeds, and running the same
command again adds nothing. A study whose trials all fail has no re-runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db.models import Run, Sweep
from db.store import open_store
from harness import tuning
from harness.cli import main
from harness.runner import metric_mode
from leaderboard.scoring import choose_trial
from suites import get_suite

pytestmark = pytest.mark.slow  # tuned sweeps end to end


def tune(db: Path, optimizer: str, *extra: str) -> list[str]:
    return [
        "tune",
        "tiny-ce",
        optimizer,
        "--db",
        str(db),
        "--workers",
        "1",
        "--devices",
        "cpu",
        "--timeout",
        "60",
        *extra,
    ]


def stored(db: Path) -> list[dict[str, Any]]:
    store = open_store(f"sqlite:///{db}")
    try:
        with store.session() as s:
            rows = s.execute(
                select(Run.id, Run.key, Run.seed, Run.role, Run.trial, Run.config_hash, Run.status, Run.track).order_by(
                    Run.id
                )
            ).all()
            sweeps = s.execute(select(Sweep.track, Sweep.status, Sweep.kind)).all()
        assert all(sw == ("tuned", "finished", "tune") for sw in sweeps), sweeps
        return [r._asdict() for r in rows]
    finally:
        store.dispose()


def test_tune_runs_trials_selects_reruns_and_resumes_to_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "t.db"
    assert main(tune(db, "sgd", "--trials", "3", "--seeds", "2")) == 0
    out = capsys.readouterr().out
    runs = stored(db)
    trials = [r for r in runs if r["role"] == tuning.ROLE_TRIAL]
    reruns = [r for r in runs if r["role"] == tuning.ROLE_RERUN]
    assert len(runs) == 5 and len(trials) == 3 and len(reruns) == 2
    assert all(r["track"] == "tuned" for r in runs)
    assert sorted(r["trial"] for r in trials) == [0, 1, 2]
    assert {r["seed"] for r in trials} == {tuning.DEFAULT_TRIAL_SEED}
    assert len({r["config_hash"] for r in trials}) == 3  # three different configurations

    # The re-runs are the configuration the stored trials select, on seeds 0 and 1.
    store = open_store(f"sqlite:///{db}")
    try:
        by_trial = tuning.stored_rows(store, [r["key"] for r in trials])
    finally:
        store.dispose()
    suite = get_suite("tiny-ce")
    results = [tuning.trial_result(_trial(r), by_trial[r["key"]]) for r in trials]
    best = choose_trial([x for x in results if x is not None], metric_mode(suite.val_metric, suite))
    assert best is not None
    chosen_hash = next(r["config_hash"] for r in trials if r["trial"] == best.trial)
    assert sorted(r["seed"] for r in reruns) == [0, 1]
    assert {(r["trial"], r["config_hash"]) for r in reruns} == {(best.trial, chosen_hash)}
    assert f"trial {best.trial} of 3" in out and chosen_hash in out

    # Running the same command again completes what is missing: nothing.
    assert main(tune(db, "sgd", "--trials", "3", "--seeds", "2", "--json")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary is not None
    again = stored(db)
    assert [r["id"] for r in again if r["role"] != "run"] == [r["id"] for r in runs]


def _trial(row: dict[str, Any]) -> tuning.Trial:
    return tuning.Trial(index=row["trial"], point={}, resolved={}, config_hash=row["config_hash"])


def test_a_study_whose_trials_all_fail_has_no_reruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "f.db"
    assert main(tune(db, "tests.faulty_adapters:Raising", "--trials", "2", "--seeds", "2")) == 0
    out = capsys.readouterr().out
    runs = stored(db)
    assert [(r["role"], r["status"]) for r in runs] == [(tuning.ROLE_TRIAL, "error")] * 2
    assert "all 2 trials failed" in out
