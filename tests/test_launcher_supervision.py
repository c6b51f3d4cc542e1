"""The supervised launcher: a launcher killed under running requests is seen at once, started
again, and the requests that were in flight run again (at most ``LAUNCH_ATTEMPTS`` times)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.worker import Lane, LaneError, Launcher
from harness.worker.lanes import LAUNCH_ATTEMPTS

pytestmark = pytest.mark.slow  # each launcher start imports the run loop (seconds)

H = "tests.launcher_handlers:"


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != b"Z":
            found.append(int(entry))
    return found


@pytest.fixture
def launcher(tmp_path: Path) -> Any:
    launcher = Launcher(preload=(), log=tmp_path / "launcher.log")
    launcher.start()
    yield launcher
    launcher.close(wait_s=2.0)


def test_a_killed_launcher_is_seen_at_once_and_the_request_runs_again(launcher: Launcher, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    lane = Lane("t", launcher=launcher, relaunch=launcher.start, workdir=tmp_path / "lane")
    request = {"op": "test", "handler": H + "sleep_request", "sleep": 3.0, "marker_dir": str(markers)}
    answer: dict[str, Any] = {}

    def call() -> None:
        answer["envelope"], answer["exit"], answer["err"] = lane._call_relaunching(request, 60.0)
        answer["done"] = time.monotonic()

    worker = threading.Thread(target=call)
    worker.start()
    first = launcher.pid
    assert first is not None
    deadline = time.monotonic() + 60
    while len(list(markers.iterdir())) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _children_of(first), "the request should be running in a child of the launcher"
    os.kill(first, signal.SIGKILL)
    killed = time.monotonic()
    assert launcher.died.wait(2.0), "the death must be noticed at once"
    assert time.monotonic() - killed < 1.0
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert answer["envelope"]["answer"] == 42
    assert launcher.starts == 2 and launcher.pid != first and launcher.alive
    assert lane.relaunched_runs == 1
    assert len(list(markers.iterdir())) == 2  # the killed start and the one that answered
    # The second start ran its full 3 s: nothing waited for a timeout before restarting.
    assert answer["done"] - killed < 3.0 + 30.0


def test_a_request_that_kills_its_launcher_every_time_fails_after_the_last_attempt(
    launcher: Launcher, tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    lane = Lane("t", launcher=launcher, relaunch=launcher.start, workdir=tmp_path / "lane")
    request = {"op": "test", "handler": H + "kill_launcher_request", "marker_dir": str(markers)}
    t0 = time.monotonic()
    with pytest.raises(LaneError, match=f"run started {LAUNCH_ATTEMPTS} time"):
        lane._call_relaunching(request, 60.0)
    assert time.monotonic() - t0 < 60.0  # never the hard timeout
    assert len(list(markers.iterdir())) == LAUNCH_ATTEMPTS
    assert launcher.starts == LAUNCH_ATTEMPTS
