"""``ngbench quickstart``: the README's main job, on a tiny suite: every torch adapter runs through
the sweep orchestrator into the SQLite file, the site is built, both paths are printed, and a
second invocation completes what is missing (nothing) and rebuilds the site."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Run
from db.store import open_store
from harness import registry
from harness.cli import main
from harness.commands.quickstart import SLOW_SUITES, quickstart_config
from suites import list_suites

pytestmark = pytest.mark.slow  # quickstart end to end


def test_default_plan_is_every_adapter_on_the_quick_ci_suites() -> None:
    names = [s.name for s in list_suites("ci") if s.name not in SLOW_SUITES]
    raw = quickstart_config(names, ["torch"], [0])
    assert raw["optimizers"] == list(registry.adapters("torch")) and len(raw["optimizers"]) >= 9
    assert "minilm-lora" not in raw["suites"] and {"digits-mlp", "rosenbrock", "digits-cnn"} <= set(raw["suites"])


def test_quickstart_stores_every_run_and_builds_the_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["quickstart", "--suite", "tiny-ce", "--out", "site", "--devices", "cpu"]) == 0
    out = capsys.readouterr().out
    index = tmp_path / "site" / "index.html"
    assert index.is_file() and f"leaderboard: {index}" in out
    assert f"results: sqlite:///{tmp_path / 'ngbench.db'}" in out
    store = open_store(str(tmp_path / "ngbench.db"))
    try:
        with store.session() as s:
            rows = s.execute(select(Run.optimizer, Run.status)).all()
    finally:
        store.dispose()
    assert sorted(o for o, _ in rows) == sorted(registry.adapters("torch"))
    assert all(status not in ("error", "crashed") for _, status in rows), rows
    assert "sgd" in index.read_text()

    assert main(["quickstart", "--suite", "tiny-ce", "--out", "site", "--devices", "cpu"]) == 0
    assert "already finished (skipped); 0 ran" in capsys.readouterr().out
    store = open_store(str(tmp_path / "ngbench.db"))
    try:
        with store.session() as s:
            assert s.execute(select(func.count(Run.id))).scalar() == len(rows)
    finally:
        store.dispose()
