"""Helpers shared by the sweep tests: finding worker processes, running the CLI, an in-process
executor for database-concurrency tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.executors.base import Executor
from harness.worker import Job, Outcome

REPO = Path(__file__).resolve().parent.parent
TOKEN_VAR = "NGBENCH_TEST_TOKEN"


def processes_with(token: str) -> list[int]:
    """Pids of live processes whose environment carries ``NGBENCH_TEST_TOKEN=token``."""
    needle = f"{TOKEN_VAR}={token}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != b"Z":
            found.append(int(entry))
    return found


def wait_until_gone(token: str, seconds: float = 10.0) -> list[int]:
    """Wait for every process with ``token`` to exit; returns those still alive."""
    deadline = time.monotonic() + seconds
    alive = processes_with(token)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = processes_with(token)
    return alive


def cli(args: Sequence[str], cwd: Path, token: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``ngbench ARGS`` in ``cwd`` (not waited for)."""
    env = {k: v for k, v in os.environ.items() if k != "NGBENCH_DB_URL"}
    env.update(extra_env or {})
    env[TOKEN_VAR] = token
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class InlineExecutor(Executor):
    """Runs jobs in this process, one after another: for database tests only.

    It breaks the worker isolation on purpose (adapter code would run next to the database
    URL), which is why it lives in the tests and not in ``harness.executors``.
    """

    name = "inline"

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[Job] = []

    @property
    def slots(self) -> int:
        return 1

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        pass

    def probe(self, backend: str) -> dict[str, Any]:
        from harness.environment import fingerprint

        return fingerprint(backend, "cpu")

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        import dataclasses

        from harness.runner import execute

        if not self._queue:
            return None
        job = self._queue.pop(0)
        t0 = time.time()
        result = execute(dataclasses.replace(job.spec, device="cpu"))
        return Outcome(
            job, result, {"dispatched": t0, "exec_start": t0, "exec_end": time.time(), "received": time.time()}
        )

    def interrupt(self, hurry: Any = None) -> list[Outcome]:
        self._queue.clear()
        return []

    def close(self) -> None:
        pass
