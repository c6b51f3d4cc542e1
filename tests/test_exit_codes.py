"""Exit statuses that tell the truth: 3 when a run crashed, errored or timed out (0 with
``--allow-failures``), 0 when runs merely diverged or missed their target."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from harness.cli import main
from harness.commands.sweep import EXIT_RUN_FAILURES, failure_text, failures_of
from harness.orchestrator import RUN_FAILURE_STATUSES, SweepSummary

F = "tests.faulty_adapters:"


def _summary(**statuses: int) -> SweepSummary:
    s = SweepSummary(sweep_id=1, name="x", kind="sweep", planned=sum(statuses.values()))
    s.statuses = collections.Counter(statuses)
    return s


def test_only_crashed_error_and_timeout_count_as_failures() -> None:
    assert frozenset({"crashed", "error", "timeout"}) == RUN_FAILURE_STATUSES
    mixed = _summary(crashed=2, error=1, timeout=1, diverged=3, budget_exhausted=4, oom=1, interrupted=1)
    assert failures_of(mixed) == {"crashed": 2, "error": 1, "timeout": 1}
    assert mixed.failures == {"crashed": 2, "error": 1, "timeout": 1}
    assert failures_of(_summary(diverged=3, budget_exhausted=4, target_reached=1, oom=2)) == {}
    text = failure_text({"crashed": 2, "error": 1}, allowed=False)
    assert text.startswith("FAILED: 3 run(s) failed (2 crashed, 1 error); exit status 3")
    assert "exit status 0 (--allow-failures)" in failure_text({"timeout": 1}, allowed=True)
    assert failure_text({}, allowed=False) == ""


def test_a_tuned_sweep_counts_the_failures_of_both_phases() -> None:
    class Tuned:
        selections = ()
        trials = _summary(error=1, diverged=2)
        reruns = _summary(crashed=1, budget_exhausted=3)

    assert failures_of(Tuned()) == {"crashed": 1, "error": 1}


@pytest.mark.slow
def test_sweep_exit_status_is_3_for_failed_runs_and_0_for_diverged_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = (
        'name = "{name}"\nsuites = ["tiny-ce"]\noptimizers = {opts}\nseeds = [0]\n'
        "steps = {steps}\nstop_at_target = false\n"
    )
    (tmp_path / "diverged.toml").write_text(toml.format(name="div", opts=f'["{F}Diverging"]', steps=40))
    (tmp_path / "failed.toml").write_text(toml.format(name="fail", opts=f'["sgd", "{F}Raising"]', steps=5))
    monkeypatch.chdir(tmp_path)
    db = ["--db", str(tmp_path / "e.db"), "--devices", "cpu"]
    assert main(["sweep", "diverged.toml", *db]) == 0
    out = capsys.readouterr().out
    assert "diverged 1" in out and "FAILED" not in out
    assert main(["sweep", "failed.toml", *db]) == EXIT_RUN_FAILURES == 3
    out = capsys.readouterr().out
    assert "FAILED: 1 run(s) failed (1 error); exit status 3" in out
    # A failed run is retried by the next sweep of the file; still failing, --allow-failures exits 0.
    assert main(["sweep", "failed.toml", *db, "--allow-failures"]) == 0
    out = capsys.readouterr().out
    assert "1 already finished (skipped)" in out and "1 run(s) failed (1 error); exit status 0" in out
