"""Fault injection: failing runs are results, the sweep completes, the others are unaffected;
workers hold no credentials and die with their parent; Ctrl-C and SIGKILL lose nothing."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from db.store import open_store
from harness.cli import main
from harness.executors.local import LocalExecutor
from harness.orchestrator import SweepSummary, run_sweep
from harness.plans import expand
from harness.runner import RunSpec, execute
from harness.sweep import load_config
from harness.worker import Job, Lane, grace_period, scrubbed_environ
from tests.faulty_adapters import SECRET_MARK
from tests.sweep_helpers import TOKEN_VAR, cli, processes_with, wait_until_gone

pytestmark = pytest.mark.slow  # end-to-end fault injection in worker processes

F = "tests.faulty_adapters:"
TIMEOUT_S = 2.0
STEPS = 6
#: optimizer -> (status, text the error must contain)
EXPECTED: dict[str, tuple[str, str | None]] = {
    "sgd": ("budget_exhausted", None),
    F + "Diverging": ("diverged", "loss "),
    F + "Raising": ("error", "ValueError: injected failure at step 2"),
    F + "Sleeping": ("timeout", "worker killed after exceeding its wall-clock limit (2 s + 2 s grace)"),
    F + "Exiting": ("crashed", "exit code 3"),
    F + "SelfKilled": ("crashed", "killed by signal SIGKILL (9)"),
    F + "OutOfMemory": ("oom", "MemoryError: injected: cannot allocate 64 GiB"),
    F + "CudaOutOfMemory": ("oom", "CUDA out of memory"),
    F + "CredentialProbe": ("budget_exhausted", None),
}


def fault_config(name: str = "faults") -> Any:
    return load_config(
        {
            "name": name,
            "suites": ["tiny-ce"],
            "optimizers": list(EXPECTED),
            "seeds": [0],
            "steps": STEPS,
            "timeout_s": TIMEOUT_S,
            "stop_at_target": False,
            "hparams": {"sgd": {"lr": 0.05, "momentum": 0.0}},
        }
    )


@pytest.fixture(scope="module")
def fault_sweeps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SweepSummary, SweepSummary, str]]:
    """The fault sweep (two CPU workers), then the same sweep resumed; database URLs that
    carry :data:`SECRET_MARK` sit in the parent's environment all along."""
    tmp = tmp_path_factory.mktemp("faults")
    url = f"sqlite:///{tmp / (SECRET_MARK + '.db')}"
    token = uuid.uuid4().hex
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NGBENCH_DB_URL", url)
        mp.setenv("DATABASE_URL", f"postgresql://bench:{SECRET_MARK}@db.example:5432/bench")
        mp.setenv(TOKEN_VAR, token)
        store = open_store(url)
        plan = expand(fault_config())
        executor = LocalExecutor(("cpu",), 2)
        try:
            first = run_sweep(plan, store, executor, close_executor=False)
            second = run_sweep(plan, store, executor, resume=True, close_executor=False)
        finally:
            executor.close()
        store.dispose()
    yield url, first, second, token


def test_every_fault_becomes_the_right_status_and_error(fault_sweeps: Any) -> None:
    _, first, _, _ = fault_sweeps
    assert not first.interrupted and first.ran == len(EXPECTED) and first.stored == len(EXPECTED)
    by_opt = {o.job.spec.optimizer: o for o in first.outcomes}
    assert set(by_opt) == set(EXPECTED)
    for opt, (status, text) in EXPECTED.items():
        result = by_opt[opt].result
        assert result.status == status, (opt, result.status, result.error)
        if text is not None:
            assert result.error and text in result.error, (opt, result.error)
        assert result.key == by_opt[opt].job.key  # even for workers that never wrote a result
    # The crash keeps the worker's last words; the hung worker was killed on time.
    assert "goodbye from the worker" in by_opt[F + "Exiting"].result.error
    sleeping = by_opt[F + "Sleeping"].timing
    assert sleeping["received"] - sleeping["dispatched"] < TIMEOUT_S + grace_period(TIMEOUT_S) + 3.0
    # Divergence was detected by the run loop, with the metric series kept.
    assert by_opt[F + "Diverging"].result.metrics


def test_other_runs_are_unaffected(fault_sweeps: Any) -> None:
    _, first, _, _ = fault_sweeps
    sgd = next(o.result for o in first.outcomes if o.job.spec.optimizer == "sgd")
    alone = execute(
        RunSpec(
            "tiny-ce", "sgd", steps=STEPS, hparams={"lr": 0.05, "momentum": 0.0}, device="cpu", stop_at_target=False
        )
    )
    assert sgd.final_train_loss == alone.final_train_loss and sgd.steps == alone.steps == STEPS
    assert sgd.key == alone.key


def test_results_are_stored_with_status_and_error_text(fault_sweeps: Any) -> None:
    url, first, _, _ = fault_sweeps
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    first_ids = [o.job.index for o in first.outcomes]
    rows = con.execute(
        "SELECT optimizer, status, error, key FROM runs WHERE sweep_id = ? ORDER BY id LIMIT ?",
        (first.sweep_id, len(first_ids)),
    ).fetchall()
    sweep = con.execute("SELECT status, environment_id FROM sweeps WHERE id = ?", (first.sweep_id,)).fetchone()
    con.close()
    assert sorted((r[0], r[1]) for r in rows) == sorted((k, v[0]) for k, v in EXPECTED.items())
    stored = {r[0]: r[2] for r in rows}
    assert "ValueError: injected failure" in stored[F + "Raising"] and "exit code 3" in stored[F + "Exiting"]
    assert sweep[0] == "finished" and sweep[1] is not None


def test_workers_never_see_credentials(fault_sweeps: Any) -> None:
    _, first, _, _ = fault_sweeps
    probe = next(o.result for o in first.outcomes if o.job.spec.optimizer == F + "CredentialProbe")
    assert probe.status == "budget_exhausted" and probe.error is None  # it raises if it finds one
    assert SECRET_MARK not in str(probe.environment)
    env = {
        "NGBENCH_DB_URL": "sqlite:///x.db",
        "MY_DB_URL": "x",
        "DATABASE_URL": "x",
        "PGPASSWORD": "x",
        "OTHER": "postgresql+psycopg://u:pw@host/db",
        "API_TOKEN": "x",
        "OMP_NUM_THREADS": "1",
        "PATH": "/usr/bin",
    }
    assert scrubbed_environ(env) == {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin"}


def test_resume_retries_only_failed_runs(fault_sweeps: Any) -> None:
    url, first, second, token = fault_sweeps
    assert second.resumed and second.sweep_id == first.sweep_id
    retried = sorted(o.job.spec.optimizer for o in second.outcomes)
    assert retried == sorted([F + "Raising", F + "Exiting", F + "SelfKilled"])  # error and crashed only
    assert second.skipped_finished == len(EXPECTED) - 3
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    finished = con.execute(
        "SELECT key, COUNT(*) FROM runs WHERE status NOT IN ('error', 'crashed', 'interrupted') GROUP BY key"
    ).fetchall()
    attempts = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    con.close()
    assert len(finished) == len(EXPECTED) - 3 and all(n == 1 for _, n in finished)
    assert attempts == len(EXPECTED) + 3  # failed attempts are kept, finished runs never duplicated
    assert wait_until_gone(token) == []  # no launcher or worker outlives its sweep


def test_spawn_isolation_gives_the_same_results() -> None:
    """A new interpreter per run (``--isolation spawn``): same numbers, same crash handling."""
    lane = Lane("spawn0", threads=1, isolation="spawn")
    try:
        spec = RunSpec("tiny-ce", "sgd", steps=STEPS, stop_at_target=False, timeout_s=120)
        ok = lane.run(Job(0, spec)).result
        crashed = lane.run(Job(1, dataclasses.replace(spec, optimizer=F + "Exiting"))).result
    finally:
        lane.close()
    assert ok.status == "budget_exhausted", ok.error
    alone = execute(dataclasses.replace(spec, device="cpu"))
    assert ok.final_train_loss == alone.final_train_loss and ok.key == alone.key
    assert crashed.status == "crashed" and "exit code 3" in crashed.error and "goodbye" in crashed.error


SWEEP_TOML = """
name = "{name}"
suites = ["tiny-ce"]
optimizers = {optimizers}
seeds = {seeds}
steps = {steps}
stop_at_target = false
timeout_s = {timeout}
"""


def _count(db: Path, sql: str, *args: Any) -> Any:
    try:
        con = sqlite3.connect(db, timeout=30)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet
        return []


def test_sigkill_of_the_parent_then_resume_finishes_every_run_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Runs that take ~0.4 s of mostly sleeping (NGBENCH_TEST_STEP_DELAY), so the kill lands
    # mid-sweep without loading the machine.
    seeds = list(range(5))
    (tmp_path / "s.toml").write_text(
        SWEEP_TOML.format(name="killme", optimizers=f'["sgd", "{F}SlowSGD"]', seeds=seeds, steps=20, timeout=120)
    )
    db = tmp_path / "k.db"
    token = uuid.uuid4().hex
    delay = {"NGBENCH_TEST_STEP_DELAY": "0.02"}
    proc = cli(["sweep", "s.toml", "--db", str(db), "--workers", "2", "--devices", "cpu"], tmp_path, token, delay)
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None:
        rows = _count(db, "SELECT COUNT(*) FROM runs")
        stored = rows[0][0] if rows else 0
        if stored >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    assert processes_with(token), "workers should be running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Launchers and in-flight workers die with the parent (PR_SET_PDEATHSIG).
    assert wait_until_gone(token) == []
    before = _count(db, "SELECT COUNT(*) FROM runs")[0][0]
    assert 3 <= before < 2 * len(seeds)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(TOKEN_VAR, token)
    monkeypatch.setenv("NGBENCH_TEST_STEP_DELAY", "0.02")
    assert main(["sweep", "s.toml", "--db", str(db), "--workers", "2", "--devices", "cpu", "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"{before} already finished (skipped)" in out
    rows = _count(db, "SELECT key, status, COUNT(*) FROM runs GROUP BY key, status")
    assert len(rows) == 2 * len(seeds) and all(n == 1 for _, _, n in rows)  # every run, exactly once
    assert {s for _, s, _ in rows} <= {"budget_exhausted", "target_reached"}
    sweeps = _count(db, "SELECT id, status FROM sweeps")
    assert sweeps == [(1, "finished")]  # the resumed sweep owns all its runs
    assert _count(db, "SELECT COUNT(DISTINCT sweep_id) FROM runs") == [(1,)]
    assert wait_until_gone(token) == []


def test_ctrl_c_marks_in_flight_runs_interrupted_and_exits_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ngbench sweep`` in this process; a helper thread presses Ctrl-C (SIGINT to this process)
    once the quick run is stored and the hung one is in flight."""
    (tmp_path / "s.toml").write_text(
        SWEEP_TOML.format(name="ctrlc", optimizers=f'["sgd", "{F}Sleeping"]', seeds=[0], steps=4, timeout=600)
    )
    db = tmp_path / "c.db"
    token = uuid.uuid4().hex
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(TOKEN_VAR, token)
    pressed: list[float] = []

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _count(db, "SELECT COUNT(*) FROM runs WHERE optimizer = 'sgd'") == [(1,)]:
                time.sleep(0.5)  # the sleeping run is in its hung step by now
                pressed.append(time.monotonic())
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    helper = threading.Thread(target=press_ctrl_c, daemon=True)
    helper.start()
    code = main(["sweep", "s.toml", "--db", str(db), "--workers", "2", "--devices", "cpu"])
    done = time.monotonic()
    helper.join(timeout=5)
    out = capsys.readouterr().out
    assert pressed and code == 130
    assert done - pressed[0] < 15
    assert "INTERRUPTED" in out and "--resume" in out
    rows = _count(db, "SELECT optimizer, status, error FROM runs ORDER BY id")
    assert [(o, s) for o, s, _ in rows] == [("sgd", "budget_exhausted"), (F + "Sleeping", "interrupted")]
    assert "interrupted by the user" in rows[1][2]
    assert _count(db, "SELECT status FROM sweeps") == [("interrupted",)]
    assert wait_until_gone(token) == []
