"""Joining a Ray head started with token authentication (the pinned Ray's own mechanism).

Before, the executor removed every ``*TOKEN*`` variable around ``ray.init``, so the driver
failed with "Authentication token is missing or incorrect" and left a failed sweep row. Here a
real head is started with ``RAY_AUTH_MODE=token`` in a process group of its own, a sweep joins
it with the token in the driver's environment, and a probe adapter checks that the runs never
see the database URL.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

from tests.faulty_adapters import SECRET_MARK

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def token_head() -> Iterator[tuple[str, str]]:
    """``(address, token)`` of a one-CPU Ray head that requires the token; stopped at the end."""
    token = secrets.token_hex(16)
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ngr-")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    command = [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
    head = subprocess.Popen(
        [*command, "--block", f"--temp-dir={temp}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None, "the Ray head exited during start-up"
            time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not listen within 90 s")
        yield f"127.0.0.1:{port}", token
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            time.sleep(1)  # the group's other processes stop with their parent
        shutil.rmtree(temp, ignore_errors=True)


def test_a_sweep_joins_a_token_authenticated_head(token_head: tuple[str, str], tmp_path: Path) -> None:
    address, token = token_head
    db = tmp_path / (SECRET_MARK + ".db")
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        'name = "ray-token"\nsuites = ["tiny-ce"]\n'
        'optimizers = ["sgd", "tests.faulty_adapters:CredentialProbe"]\nsteps = 3\nstop_at_target = false\n'
    )
    # A driver process of its own: Ray reads its authentication settings when it is imported.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, NGBENCH_DB_URL=f"sqlite:///{db}")
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "sweep", str(sweep), "--executor", "ray", "--ray-address", address],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"on ray ({address})" in done.stdout and "stored 2 run(s)" in done.stdout
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT optimizer, status FROM runs").fetchall())
    # CredentialProbe fails its run if the database URL reached it.
    assert rows == {"sgd": "budget_exhausted", "tests.faulty_adapters:CredentialProbe": "budget_exhausted"}
