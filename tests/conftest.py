"""Shared fixtures. Feature-specific fixtures live in their own test modules or in
``tests/fixtures_*.py`` modules imported from here."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Tests are CPU-only and run two workers on two cores: one intra-op thread each.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
