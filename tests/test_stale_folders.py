"""Folders a killed sweep or site build leaves behind are removed by the next start, and only
those whose process is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness.worker.stale import owner_pid, remove_stale
from leaderboard.site import _HOST, MARKER, _remove_stale_staging


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lane_folders_and_launcher_logs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / f"ngbench-lane-{dead}-abc").mkdir()
    (tmp_path / f"ngbench-lane-{dead}-abc" / "job-1.err").write_text("x")
    (tmp_path / f"ngbench-lane-{alive}-def").mkdir()
    (tmp_path / f"ngbench-launcher-{dead}-x.log").write_text("log")
    (tmp_path / f"ngbench-launcher-{alive}-y.log").write_text("log")
    (tmp_path / "ngbench-lane-fresh123").mkdir()  # no pid (older version), new: kept
    old = tmp_path / "ngbench-lane-old45678"
    old.mkdir()
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    (tmp_path / f"unrelated-{dead}-z").mkdir()
    removed = remove_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted(
        [f"ngbench-lane-{dead}-abc", f"ngbench-launcher-{dead}-x.log", "ngbench-lane-old45678"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"ngbench-lane-{alive}-def", f"ngbench-launcher-{alive}-y.log", "ngbench-lane-fresh123", f"unrelated-{dead}-z"]
    )
    assert owner_pid(f"ngbench-lane-{dead}-abc", "ngbench-lane-") == dead
    assert owner_pid("ngbench-lane-12345678", "ngbench-lane-") is None


def test_site_staging_folders_of_killed_builds_are_removed_and_a_half_swapped_site_restored(tmp_path: Path) -> None:
    out = tmp_path / "site"
    dead = _dead_pid()
    (tmp_path / f".site.build-{_HOST}-{dead}").mkdir()
    (tmp_path / f".site.build-{_HOST}-{os.getpid()}").mkdir()  # a build in progress (this process)
    (tmp_path / f".site.build-other.host-{dead}").mkdir()  # another host's: cannot tell, kept
    old = tmp_path / f".site.old-{_HOST}-{dead}"
    old.mkdir()
    (old / MARKER).write_text("built by ngbench site build\n")
    (old / "index.html").write_text("<html></html>")
    removed = _remove_stale_staging(out)
    assert [p.name for p in removed] == [f".site.build-{_HOST}-{dead}"]
    assert (out / "index.html").read_text() == "<html></html>"  # killed mid-swap: the old site is back
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["site", f".site.build-{_HOST}-{os.getpid()}", f".site.build-other.host-{dead}"]
    )
