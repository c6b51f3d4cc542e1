"""The trust boundary: third-party adapter code never runs in a process holding database
credentials (CONTRIBUTING.md). Built-in adapters are ngbench's own code; every other adapter is
described, validated and run in scrubbed workers (``harness.external``, ``harness.worker``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import external
from harness.plans import expand
from harness.sweep import load_config

pytestmark = pytest.mark.slow  # third-party code in scrubbed workers, end to end

PROBE = "tests.credential_probe:ProbeSGD"
ROOT = Path(__file__).resolve().parent.parent


def imports(probe_file: Path) -> list[dict]:
    if not probe_file.exists():
        return []
    return [json.loads(line) for line in probe_file.read_text().splitlines()]


@pytest.fixture
def probe_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "imports.jsonl"
    monkeypatch.setenv("NGBENCH_TEST_PROBE_FILE", str(path))
    monkeypatch.setenv("NGBENCH_DB_URL", "postgresql+psycopg://bench:s3cret@127.0.0.1:9/bench")
    sys.modules.pop("tests.credential_probe", None)
    return path


def test_builtins_are_known_without_importing_third_party_code() -> None:
    assert external.is_builtin("ief", "torch") and not external.is_builtin(PROBE, "torch")
    assert not external.is_builtin("lion", "torch")  # an entry point is third-party code


def test_sweep_validation_describes_third_party_adapters_in_a_worker(probe_file: Path) -> None:
    plan = expand(load_config({"name": "x", "suites": ["tiny-ce"], "optimizers": ["sgd", PROBE], "seeds": [0]}))
    assert [s.optimizer for s in plan.specs] == ["sgd", PROBE]
    info = plan.adapters[(PROBE, "torch")]
    assert info.name == "probe-sgd" and info.version and "softmax_ce" in info.likelihoods
    seen = imports(probe_file)
    assert seen and all(entry["pid"] != os.getpid() and entry["secrets"] == [] for entry in seen)
    assert "tests.credential_probe" not in sys.modules


def test_sweep_validation_reports_bad_third_party_hyperparameters(probe_file: Path) -> None:
    from harness.errors import ConfigError

    config = load_config({"name": "x", "suites": ["tiny-ce"], "optimizers": [PROBE], "hparams": {PROBE: {"lr": -1}}})
    with pytest.raises(ConfigError, match="probe-sgd: lr must be > 0"):
        expand(config)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_run_and_approx_run_third_party_code_only_in_workers(probe_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    out = _cli("run", "tiny-ce", PROBE, "--steps", "3", "--db", str(db), "--device", "cpu", cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "stored as run 1" in out.stdout and "isolated worker" in out.stderr
    out = _cli(
        "approx",
        "tiny-ce",
        "-o",
        f"sgd,{PROBE}",
        "--steps",
        "4",
        "--checkpoints",
        "2",
        "--batches",
        "1",
        "--device",
        "cpu",
        "--db",
        str(db),
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert "probe-sgd" in out.stdout
    seen = imports(probe_file)
    assert len(seen) >= 2
    assert all(entry["secrets"] == [] for entry in seen), seen
    out = _cli("run", "tiny-ce", PROBE, "--set", "lr=-1", "--db", str(db), cwd=ROOT)
    assert out.returncode == 2 and "probe-sgd: lr must be > 0" in out.stderr


def test_site_metadata_is_collected_without_importing_any_adapter() -> None:
    code = (
        "import sys; from harness.site import method_metadata; m, v = method_metadata(); "
        "print(len(m), 'jax' in sys.modules, any(k.startswith('backends.torch.optimizers') for k in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), NGBENCH_DB_URL="postgresql+psycopg://u:s3cret@h/db")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    count, jax_loaded, torch_adapters_loaded = out.stdout.split()
    assert int(count) >= 9 and jax_loaded == "False" and torch_adapters_loaded == "False"
