"""What a worker's environment may hold: never database URLs or credentials (docs/architecture.md)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

#: Environment variables never passed to a worker (exact names).
SECRET_ENV_NAMES: frozenset[str] = frozenset(
    {
        "NGBENCH_DB_URL",
        "NGBENCH_TEST_PG_URL",
        "DATABASE_URL",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICEFILE",
        "PGSERVICE",
        "PGUSER",
        "PGHOST",
        "PGDATABASE",
    }
)
#: ... and names matching this pattern.
SECRET_ENV_PATTERN = re.compile(r"(DB_URL|DATABASE_URL|_DSN|PASSWORD|SECRET|TOKEN|CREDENTIAL)", re.IGNORECASE)
#: A value that is a URL with a password (``scheme://user:password@host``).
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.\-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)

#: Set in every worker's environment (tests find leftover workers by it).
WORKER_MARK = "NGBENCH_WORKER"


def scrubbed_environ(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) without database URLs or credentials."""
    source = os.environ if env is None else env
    return {
        k: v
        for k, v in source.items()
        if k not in SECRET_ENV_NAMES and not SECRET_ENV_PATTERN.search(k) and not _URL_WITH_PASSWORD.search(v)
    }


def worker_environ(extra: Mapping[str, str] | None = None, cwd: str | None = None) -> dict[str, str]:
    """The environment of launchers and spawned workers: scrubbed, marked, importable paths."""
    env = scrubbed_environ()
    env.update(extra or {})
    env[WORKER_MARK] = "1"
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([cwd or os.getcwd(), *paths]))
    return env
