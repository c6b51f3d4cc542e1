"""End to end: a sweep survives its launcher, stops at once on a second Ctrl-C, shares a sweep
file with a concurrent sweep without running anything twice, and cleans up after a kill."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.sweep_helpers import cli, wait_until_gone

pytestmark = pytest.mark.slow  # whole sweeps in worker processes

F = "tests.faulty_adapters:"
SWEEP_TOML = """
name = "{name}"
suites = ["tiny-ce"]
optimizers = {optimizers}
seeds = {seeds}
steps = {steps}
stop_at_target = false
timeout_s = {timeout}
"""


def _rows(db: Path, sql: str) -> list[Any]:
    try:
        con = sqlite3.connect(db, timeout=30)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet
        return []


def _stored(db: Path) -> int:
    rows = _rows(db, "SELECT COUNT(*) FROM runs")
    return rows[0][0] if rows else 0


def _launcher_of(pid: int) -> int | None:
    """The ``harness.worker serve`` child of process ``pid``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"harness.worker" in args and b"serve" in args:
            return int(entry)
    return None


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != b"Z":
            out.append(int(entry))
    return out


def _wait(predicate: Any, seconds: float, proc: Any) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds} s (sweep exit {proc.poll()})")


def test_kill_9_of_the_launcher_mid_sweep_restarts_it_and_stores_every_run_once(tmp_path: Path) -> None:
    seeds = list(range(4))
    (tmp_path / "s.toml").write_text(
        SWEEP_TOML.format(name="launcher-kill", optimizers=f'["{F}SlowSGD"]', seeds=seeds, steps=30, timeout=600)
    )
    db = tmp_path / "l.db"
    token = uuid.uuid4().hex
    env = {"NGBENCH_TEST_STEP_DELAY": "0.05"}  # 1.5 s per run, mostly asleep
    proc = cli(["sweep", "s.toml", "--db", str(db), "--workers", "2", "--devices", "cpu"], tmp_path, token, env)
    t0 = time.monotonic()
    _wait(lambda: _stored(db) >= 1, 300, proc)
    launcher = _launcher_of(proc.pid)
    assert launcher is not None
    _wait(lambda: len(_children(launcher)) >= 1, 60, proc)  # a run is in flight on it
    os.kill(launcher, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, err[-2000:]
    rows = _rows(db, "SELECT key, status, COUNT(*) FROM runs GROUP BY key, status")
    assert len(rows) == len(seeds) and all(n == 1 for _, _, n in rows)  # every run, exactly once
    assert {s for _, s, _ in rows} == {"budget_exhausted"}  # none crashed for being in flight
    assert _rows(db, "SELECT status FROM sweeps") == [("finished",)]
    assert "the worker launcher died and was restarted" in out
    assert wall < 240  # no worker slot waited for the run timeout (600 s)
    durations = [float(x) for x in re.findall(r"torch seed=\d+\s+(-?[0-9.e+]+) s", out + err)]
    assert len(durations) == len(seeds) and all(0 <= d < 240 for d in durations)
    assert wait_until_gone(token) == []


def test_a_second_ctrl_c_stops_the_sweep_within_a_second(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        SWEEP_TOML.format(name="ctrlc2", optimizers=f'["{F}IgnoringInterrupt"]', seeds=[0], steps=6, timeout=600)
    )
    db = tmp_path / "c.db"
    token = uuid.uuid4().hex
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = cli(
        ["sweep", "s.toml", "--db", str(db), "--devices", "cpu"],
        tmp_path,
        token,
        {"NGBENCH_TEST_MARKER_DIR": str(markers)},
    )
    _wait(lambda: any(markers.iterdir()), 300, proc)  # the run is in its hung step, with SIGINT ignored
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    second = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    stopped = time.monotonic() - second
    assert proc.returncode == 130, err[-2000:]
    assert stopped < 1.0, f"stopped {stopped:.2f} s after the second Ctrl-C"
    assert _rows(db, "SELECT status FROM runs") == [("interrupted",)]
    assert _rows(db, "SELECT status FROM sweeps") == [("interrupted",)]
    assert wait_until_gone(token) == []


def test_two_sweeps_of_one_file_at_once_execute_each_run_once(tmp_path: Path) -> None:
    seeds = list(range(6))
    (tmp_path / "s.toml").write_text(
        SWEEP_TOML.format(name="twice", optimizers=f'["{F}CountedSGD"]', seeds=seeds, steps=20, timeout=600)
    )
    markers = tmp_path / "markers"
    markers.mkdir()
    db = tmp_path / "t.db"
    token = uuid.uuid4().hex
    env = {"NGBENCH_TEST_STEP_DELAY": "0.05", "NGBENCH_TEST_MARKER_DIR": str(markers)}
    args = ["sweep", "s.toml", "--db", str(db), "--devices", "cpu", "--json"]
    procs = [cli(args, tmp_path, token, env) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
    summaries = [_json_line(out) for out, _ in outputs]
    rows = _rows(db, "SELECT key, COUNT(*) FROM runs GROUP BY key")
    assert len(rows) == len(seeds) and all(n == 1 for _, n in rows)
    assert len(list(markers.iterdir())) == len(seeds)  # executed once each, by one of the sweeps
    assert sum(s["stored"] for s in summaries) == len(seeds)
    assert sum(s["discarded"] for s in summaries) == 0
    for s in summaries:
        assert s["stored"] + s["skipped_finished"] + s["leased_elsewhere"] == len(seeds)
    assert _rows(db, "SELECT COUNT(*) FROM run_leases") == [(0,)]  # every claim released
    assert wait_until_gone(token) == []


def _json_line(out: str) -> dict[str, Any]:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_a_killed_sweep_leaves_no_folders_after_the_next_start_and_resumes(tmp_path: Path) -> None:
    seeds = list(range(4))
    (tmp_path / "s.toml").write_text(
        SWEEP_TOML.format(name="cleanup", optimizers=f'["{F}SlowSGD"]', seeds=seeds, steps=20, timeout=600)
    )
    db = tmp_path / "k.db"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    token = uuid.uuid4().hex
    env = {"NGBENCH_TEST_STEP_DELAY": "0.05", "TMPDIR": str(tmp)}
    args = ["sweep", "s.toml", "--db", str(db), "--workers", "2", "--devices", "cpu"]
    proc = cli(args, tmp_path, token, env)
    _wait(lambda: _stored(db) >= 1, 300, proc)
    killed = proc.pid
    proc.kill()
    proc.communicate()
    assert wait_until_gone(token) == []
    left = sorted(p.name for p in tmp.iterdir())
    assert any(n.startswith(f"ngbench-lane-{killed}-") for n in left), left
    assert _rows(db, "SELECT COUNT(*) FROM run_leases")[0][0] >= 1  # the killed sweep's claims

    again = cli([*args, "--resume"], tmp_path, token, env)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    assert not [p.name for p in tmp.iterdir() if p.name.startswith(("ngbench-lane-", "ngbench-launcher-"))]
    rows = _rows(db, "SELECT key, status, COUNT(*) FROM runs GROUP BY key, status")
    assert len(rows) == len(seeds) and all(n == 1 for _, _, n in rows)  # its claims were taken over
    assert _rows(db, "SELECT COUNT(*) FROM run_leases") == [(0,)]
