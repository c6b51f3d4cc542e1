"""Shared fixtures. Feature-specific fixtures live in their own test modules or in
``tests/fixtures_*.py`` modules imported from here."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

# Tests are CPU-only and run two workers on two cores: one intra-op thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compile the same jitted steps in many processes (xdist workers, sweep workers): JAX's
# persistent compilation cache, shared by all of them, cuts the suite's CPU time by a third.
# Tests only: a run's compile time on the board must not depend on what compiled before it.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"ngbench-test-jax-cache-{os.getuid()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import torch

torch.set_num_threads(1)

pytest_plugins = ["tests.ci_guard"]

TINY_SUITES = ("tiny-ce", "tiny-mse")


@pytest.fixture(params=TINY_SUITES)
def tiny_suite(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tmp_db(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A fresh SQLite database file URL."""
    return f"sqlite:///{tmp_path / 'ngbench.db'}"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


from tests.fixtures_pg import pg_server, pg_url  # noqa: E402,F401  (fixtures)
