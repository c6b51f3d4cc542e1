"""The CI guard (``tests/ci_guard.py``): under ``NGBENCH_CI=1`` a skip fails the run unless the
test is marked ``gpu``; the summary counts what each external dependency executed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CASES = """
import pytest

def test_passes():
    pass

@pytest.mark.postgres
def test_counted_postgres():
    pass

@pytest.mark.gpu
def test_gpu_skip():
    pytest.skip("no CUDA")

def test_extra_missing():
    pytest.importorskip("a_module_that_is_not_installed")

@pytest.mark.minutes
def test_takes_minutes():
    pass
"""


def run_pytest(
    tmp_path: Path, *, ci: bool, only_gpu: bool = False, slow: bool = False
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.ci_guard"]\n')
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    gpu\n    postgres\n    browser\n    ray\n    kfac_jax\n    slow\n    minutes\n"
    )
    (tmp_path / "test_cases.py").write_text(CASES)
    env = {k: v for k, v in os.environ.items() if k not in ("NGBENCH_CI", "NGBENCH_SLOW_TESTS")}
    env["PYTHONPATH"] = str(REPO)
    if ci:
        env["NGBENCH_CI"] = "1"
    if slow:
        env["NGBENCH_SLOW_TESTS"] = "1"
    select = ["-k", "gpu or passes"] if only_gpu else []
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", str(tmp_path), *select],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_skip_outside_gpu_fails_under_ci(tmp_path: Path) -> None:
    out = run_pytest(tmp_path, ci=True)
    assert out.returncode == 1, out.stdout
    assert "NGBENCH_CI=1: 1 test(s) skipped without the 'gpu' marker" in out.stdout
    assert "test_extra_missing" in out.stdout and "a_module_that_is_not_installed" in out.stdout


def test_the_same_skip_passes_outside_ci_and_a_gpu_skip_passes_under_ci(tmp_path: Path) -> None:
    assert run_pytest(tmp_path, ci=False).returncode == 0
    out = run_pytest(tmp_path, ci=True, only_gpu=True)
    assert out.returncode == 0, out.stdout


def test_the_summary_counts_executed_tests_and_deselected_minutes(tmp_path: Path) -> None:
    out = run_pytest(tmp_path, ci=False)
    assert "executed: 2 tests; by dependency: postgres 1, browser 0, ray 0, kfac_jax 0, slow 0, gpu 0" in out.stdout
    assert "deselected 1 minutes-long calibration checks" in out.stdout
    out = run_pytest(tmp_path, ci=False, slow=True)
    assert "executed: 3 tests" in out.stdout and "deselected" not in out.stdout


@pytest.mark.parametrize("marker", ["gpu", "postgres", "browser", "ray", "kfac_jax", "slow", "minutes"])
def test_every_counted_marker_is_registered(marker: str) -> None:
    assert marker in (REPO / "pyproject.toml").read_text()
