"""A throwaway PostgreSQL server for tests (docs/environment.md, "PostgreSQL").

``pg_server`` (session): ``NGBENCH_TEST_PG_URL`` if set (a server URL, e.g.
``postgresql+psycopg://postgres@127.0.0.1:55432/postgres``), else a fresh cluster started
with the installed binaries (as the ``postgres`` user when run as root) and stopped at the end.
``pg_url`` (function): a fresh, empty database on that server.

Without PostgreSQL the tests skip, unless ``NGBENCH_REQUIRE_PG=1`` (set by ``.ci/run``),
which turns the skip into a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import pytest


def _unavailable(reason: str) -> None:
    if os.environ.get("NGBENCH_REQUIRE_PG") == "1":
        pytest.fail(f"PostgreSQL required (NGBENCH_REQUIRE_PG=1) but unavailable: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Base URL (without database name) of a running PostgreSQL server."""
    url = os.environ.get("NGBENCH_TEST_PG_URL")
    if url:
        yield url.rsplit("/", 1)[0]
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        _unavailable("no initdb under /usr/lib/postgresql/*/bin")
    bindir = os.path.dirname(bins[-1])
    tmp = tempfile.mkdtemp(prefix="ngbench-pg-")
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    data, port = os.path.join(tmp, "data"), _free_port()
    try:
        subprocess.run(
            _as_postgres([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres"]),
            check=True,
            capture_output=True,
        )
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_postgres([f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(tmp, "log"), "-w", "start"]),
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        _unavailable(f"could not start a cluster: {exc} {detail.decode(errors='replace')[:300]}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh empty database on the test server."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(f"{pg_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{pg_server}/{name}"
