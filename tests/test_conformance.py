"""The conformance battery (``harness.conformance``, ``ngbench check-adapter``): every built-in
adapter passes it; every deliberately broken adapter (``tests/broken_adapters.py``) is refused
by the right check with the right reason; the ``new-adapter`` templates pass it as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.methods import BUILTIN_METHODS
from harness import conformance, registry
from harness.errors import ConfigError, UnknownOptimizerError
from harness.templates import adapter_source, class_name
from suites import list_suites
from tests import broken_adapters

REPO = Path(__file__).resolve().parent.parent
BROKEN = "tests.broken_adapters:"
CASES = conformance.builtin_cases()
#: What the issue asks the battery to check, by check name.
REQUIRED_CHECKS = (
    "adapter",
    "hyperparams",
    "search_space",
    "capabilities",
    "invalid_hparams",
    "init",
    "step_outputs",
    "direction_outputs",
    "no_mutation",
    "deterministic",
    "state_roundtrip",
    "lowers_loss",
    "direction_consistent",
    "parity",
)


def ngbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NGBENCH_DB_URL"}
    env["PYTHONPATH"] = str(REPO)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


# --------------------------------------------------------------------------- built-ins


@pytest.mark.slow  # the battery of every built-in on both backends
@pytest.mark.parametrize(("name", "backend"), CASES, ids=[f"{b}-{n}" for n, b in CASES])
def test_builtin_adapter_conforms(name: str, backend: str) -> None:
    twin = "jax" if backend == "torch" else "torch"
    has_twin = registry.backend_available(twin) and name in registry.adapters(twin)
    # Parity is symmetric: a pair is compared once, from the JAX side (the torch side would
    # compile the JAX adapter a second time).
    checks = [c for c in conformance.CHECK_NAMES if not (c == "parity" and has_twin and backend == "torch")]
    report = conformance.assert_conforms(name, backend, checks=checks)
    assert [r.name for r in report.results] == checks
    if backend == "jax" and has_twin:
        assert report["parity"].passed, report["parity"].reason
    elif not has_twin:
        assert report["parity"].reason == f"no {twin} adapter named {name!r}"
    declared = registry.get_adapter(name, backend).capabilities.step_along_direction
    assert report["direction_consistent"].status == ("pass" if declared else "skip")


def test_builtin_cases_cover_every_builtin_adapter() -> None:
    torch_names = [n for n, b in CASES if b == "torch"]
    assert torch_names == [n for n in BUILTIN_METHODS if n in registry.adapters("torch")]
    assert {"sgd", "adamw"} <= set(torch_names)
    if registry.backend_available("jax"):
        assert {"sgd", "adamw"} <= {n for n, b in CASES if b == "jax"}


def test_the_battery_checks_what_the_issue_asks() -> None:
    assert set(REQUIRED_CHECKS) <= set(conformance.CHECK_NAMES)
    assert len(set(conformance.CHECK_NAMES)) == len(conformance.CHECKS)


# --------------------------------------------------------------------------- broken adapters


def test_the_control_adapter_passes_everything() -> None:
    report = conformance.check_adapter(BROKEN + "Good")
    assert report.ok, report.format()
    assert [r.status for r in report.results].count("pass") == len(conformance.CHECKS) - 2  # parity, state_handoff
    assert report["parity"].status == "skip"


@pytest.mark.parametrize(("cls", "check", "phrase"), broken_adapters.BROKEN, ids=[b[0] for b in broken_adapters.BROKEN])
def test_broken_adapter_is_refused_by_the_right_check(cls: str, check: str, phrase: str) -> None:
    report = conformance.check_adapter(BROKEN + cls, "torch")
    assert not report.ok
    result = report[check]
    assert result.failed, report.format()
    assert phrase in result.reason, result.reason
    assert "\n" not in result.reason
    # Every check that needs the failed one is skipped, never run on a broken foundation.
    for r in report.results:
        needs = next(c for c in conformance.CHECKS if c.name == r.name).requires
        if check in needs:
            assert r.status == "skip", (r.name, r.reason)


def test_failures_by_exception_keep_the_traceback_apart() -> None:
    report = conformance.check_adapter(BROKEN + "RaisesInStep", checks=["step_outputs"])
    result = report["step_outputs"]
    assert result.detail is not None and "Traceback" in result.detail and "adapter bug on purpose" in result.detail
    assert "Traceback" not in result.reason


def test_a_hanging_adapter_fails_on_time() -> None:
    report = conformance.check_adapter(BROKEN + "Hangs", checks=["step_outputs"], timeout_s=0.5)
    assert report["step_outputs"].failed and "did not finish within 0.5 s" in report["step_outputs"].reason
    assert report["step_outputs"].seconds < 5


def test_checks_subset_runs_prerequisites() -> None:
    report = conformance.check_adapter("sgd", "torch", checks=["lowers_loss"])
    assert [r.name for r in report.results] == ["adapter", "capabilities", "init", "step_outputs", "lowers_loss"]
    assert report.ok


def test_user_errors() -> None:
    with pytest.raises(UnknownOptimizerError, match="unknown optimizer 'sgdd' for backend 'torch'; did you mean sgd"):
        conformance.check_adapter("sgdd")
    with pytest.raises(UnknownOptimizerError, match="cannot import adapter module 'nomodule'"):
        conformance.check_adapter("nomodule:Thing")
    with pytest.raises(UnknownOptimizerError, match="has no attribute 'Nope'"):
        conformance.check_adapter(BROKEN + "Nope")
    with pytest.raises(ConfigError, match="unknown check"):
        conformance.check_adapter("sgd", checks=["nope"])


def test_backend_mismatch_is_a_failed_adapter_check() -> None:
    report = conformance.check_adapter(BROKEN + "Good", "jax")
    assert report["adapter"].failed
    assert "the class says backend 'torch', but it is checked for 'jax'" in report["adapter"].reason


# --------------------------------------------------------------------------- parity


def _jax_twin(scale: float) -> type:
    """A JAX plain-SGD named like :class:`tests.broken_adapters.Good`, its direction scaled."""
    from typing import NamedTuple

    import jax.numpy as jnp

    from backends.spec import adapter_class

    class State(NamedTuple):
        hparams: Any
        grad_sum: Any

    class Twin(adapter_class(broken_adapters.CARD, "jax")):  # type: ignore[misc]
        def init(self, problem: Any, hparams: Any) -> Any:
            return State(hparams, jnp.zeros(problem.num_params, dtype=problem.dtype))

        def direction(self, problem: Any, params: Any, state: Any, batch: Any) -> Any:
            return scale * problem.oracle(params, batch).grad()

        def step(self, problem: Any, params: Any, state: Any, batch: Any) -> Any:
            loss, g = problem.oracle(params, batch).loss_and_grad()
            d = scale * g
            return params - state.hparams.lr * d, State(state.hparams, state.grad_sum + g), {"loss": loss, "lr": 0.1}

    return Twin


@pytest.mark.parametrize(("scale", "status"), [(1.0, "pass"), (1.001, "fail")])
def test_parity_with_a_twin_in_the_other_backend(monkeypatch: pytest.MonkeyPatch, scale: float, status: str) -> None:
    pytest.importorskip("jax")
    twin = _jax_twin(scale)
    real = registry.adapters

    def adapters(backend: str) -> dict[str, type]:
        out = dict(real(backend))
        if backend == "jax":
            out["good-sgd"] = twin
        return out

    monkeypatch.setattr(registry, "adapters", adapters)
    report = conformance.check_adapter(BROKEN + "Good", checks=["parity"])
    assert report["parity"].status == status, report["parity"].reason
    if status == "fail":
        assert "direction on tiny-ce differs from the jax adapter's by 0.001" in report["parity"].reason


def test_parity_is_skipped_without_jax(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.backend_available
    monkeypatch.setattr(registry, "backend_available", lambda b: b != "jax" and real(b))
    report = conformance.check_adapter("sgd", "torch", checks=["parity"])
    assert report["parity"].status == "skip"
    assert report["parity"].reason == "JAX backend unavailable (not installed)"


# --------------------------------------------------------------------------- convex problems


@pytest.mark.parametrize("likelihood", ["softmax_ce", "mse"])
def test_convex_problems_are_what_they_claim(likelihood: str) -> None:
    from backends import torch as torch_backend

    suite = conformance.convex_suite(likelihood)
    assert suite.name not in {s.name for s in list_suites()}  # never registered
    problem = torch_backend.build_problem(suite, dtype="float64")
    assert problem.num_params == 42 > suite.batch_size  # over-parameterised like every suite
    rng = np.random.default_rng(0)
    for params in (problem.to_numpy(problem.params0), rng.normal(size=42)):
        expected = problem.evaluate(problem.from_numpy(params))["train_loss"]  # all 133 training samples
        np.testing.assert_allclose(conformance.convex_loss(suite, params), expected, rtol=1e-12)


# --------------------------------------------------------------------------- templates


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_the_template_passes_the_battery(tmp_path: Path, backend: str) -> None:
    if backend == "jax":
        pytest.importorskip("jax")
    path = tmp_path / "my_method.py"
    path.write_text(adapter_source("my-method", backend, reference=f"{path}:MyMethod"), encoding="utf-8")
    report = conformance.check_adapter(f"{path}:MyMethod")
    assert report.ok, report.format()
    assert report.backend == backend and report.adapter == "my-method"
    assert report["direction_consistent"].passed and report["lowers_loss"].passed
    source = path.read_text(encoding="utf-8")
    assert "your update here" in source and f"ngbench check-adapter {path}:MyMethod" in source


def test_class_names() -> None:
    assert class_name("my-sgd") == "MySgd" and class_name("kfac_v2") == "KfacV2" and class_name("lion") == "Lion"


# --------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_new_adapter_then_check_adapter(tmp_path: Path) -> None:
    out = ngbench("new-adapter", "my-opt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "my_opt.py"
    assert path.is_file() and "next: ngbench check-adapter my_opt.py:MyOpt" in out.stdout
    written = path.read_text(encoding="utf-8")
    out = ngbench("new-adapter", "my-opt", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == "ngbench: error: refusing to overwrite my_opt.py: it exists"
    assert path.read_text(encoding="utf-8") == written
    out = ngbench("check-adapter", "my_opt.py:MyOpt", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"my-opt (torch) from file {path}" in out.stdout
    # skipped: parity (no twin) and state_handoff (a pure state, not move-only)
    assert f"{len(conformance.CHECKS)} checks: {len(conformance.CHECKS) - 2} passed, 0 failed, 2 skipped" in out.stdout
    out = ngbench("new-adapter", "jax-opt", "--backend", "jax", "--out", str(tmp_path / "sub"), cwd=tmp_path)
    assert out.returncode == 2 and f"directory {tmp_path / 'sub'} does not exist" in out.stderr
    (tmp_path / "sub").mkdir()
    out = ngbench("new-adapter", "jax-opt", "--backend", "jax", "--out", str(tmp_path / "sub"), cwd=tmp_path)
    assert out.returncode == 0 and 'adapter_class(CARD, "jax")' in (tmp_path / "sub" / "jax_opt.py").read_text()


@pytest.mark.slow
def test_cli_reports_failures_with_reasons_and_exit_1(tmp_path: Path) -> None:
    out = ngbench("check-adapter", BROKEN + "MutatesParams", cwd=tmp_path)
    assert out.returncode == 1
    assert "FAIL" in out.stdout and "wrote into the parameters in place" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    out = ngbench("check-adapter", BROKEN + "RaisesInStep", "--check", "step_outputs", "--json", cwd=tmp_path)
    assert out.returncode == 1
    (report,) = json.loads(out.stdout)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["step_outputs"] and "adapter bug on purpose" in failed[0]["reason"]
    # Names and reasons are printed literally (never as rich markup).
    out = ngbench("check-adapter", BROKEN + "BadName", "--check", "adapter", cwd=tmp_path)
    assert out.returncode == 1 and "name '[bold]My Optimizer[/bold]!'" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check-adapter", "sgdd"], "unknown optimizer 'sgdd' for backend 'torch'; did you mean sgd"),
        (["check-adapter", "nomodule:Thing"], "cannot import adapter module 'nomodule'"),
        (["check-adapter", "sgd", "--backend", "tf"], "unknown backend 'tf'"),
        (["check-adapter", "sgd", "--check", "nope"], "unknown check(s) nope"),
        (["new-adapter", "My Opt"], "optimizer name 'My Opt' is not a lowercase slug"),
        (["new-adapter", "x", "--out", "x.txt"], "x.txt does not end in .py"),
    ],
)
def test_cli_user_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    out = ngbench(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.iterdir())
