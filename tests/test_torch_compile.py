"""Compiled PyTorch as an option of the protocol (``RunSpec.torch_compile``, ``--torch-compile``):
recorded with the run, part of its key, a backend of its own on the board, compile time booked
apart from step time (docs/measurement.md, "Compiled PyTorch")."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from db import queries
from db.store import open_store
from harness import keys, plans
from harness.cli import main
from harness.errors import ConfigError
from harness.runner import RunSpec, execute, prepare
from leaderboard import data as board_data
from leaderboard.labels import COMPILED_TORCH, backend_label, framework
from suites import get_suite
from tests.test_site_build import result

ENV = {"device_kind": "cpu", "device_name": "Test CPU"}


def test_the_run_key_tells_compiled_from_eager_and_keeps_eager_keys_as_they_were() -> None:
    suite = get_suite("tiny-ce")
    eager = RunSpec("tiny-ce", "sgd")
    compiled = dataclasses.replace(eager, torch_compile=True)
    key_of = lambda spec: keys.run_key_for(spec, suite, "sgd", "v1", {"lr": 0.1}, ENV)  # noqa: E731
    assert key_of(compiled) != key_of(eager)
    # A spec from before the option existed (no such field) has the eager run's key.
    before = SimpleNamespace(**{k: v for k, v in eager.to_dict().items() if k != "torch_compile"})
    assert key_of(before) == key_of(eager)


def test_the_option_is_for_torch_only() -> None:
    with pytest.raises(ConfigError, match="torch_compile applies to the torch backend only"):
        prepare(RunSpec("tiny-ce", "sgd", backend="jax", torch_compile=True))


def test_the_option_is_stored_in_the_spec_and_the_board_ranks_compiled_torch_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(tmp_path / "r.db")
    eager = result("tiny-ce", "sgd", 0, ttt=2.0)
    compiled = result("tiny-ce", "sgd", 0, ttt=1.0)
    compiled.spec = dataclasses.replace(compiled.spec, torch_compile=True)
    compiled.key = "compiled-" + str(compiled.key)[:20]
    ids = store.save_run(eager), store.save_run(compiled)
    rows = queries.runs_frame(store).set_index("id")
    specs = queries.run_specs(store)
    assert list(rows.loc[list(ids), "backend"]) == ["torch", "torch"]  # the framework, as before
    assert [specs[i].get("torch_compile") for i in ids] == [False, True]

    site = board_data.load(store)
    store.dispose()
    # `ngbench runs` shows and filters the label the board uses.
    capsys.readouterr()
    assert main(["runs", "--db", str(tmp_path / "r.db"), "--csv"]) == 0
    assert [line.split(",")[3] for line in capsys.readouterr().out.splitlines()[1:]] == ["torch", COMPILED_TORCH]
    assert main(["runs", "--db", str(tmp_path / "r.db"), "--csv", "--backend", COMPILED_TORCH]) == 0
    assert [line.split(",")[0] for line in capsys.readouterr().out.splitlines()[1:]] == [str(ids[1])]
    runs = site.runs.set_index("id")
    assert list(runs.loc[list(ids), "backend"]) == ["torch", COMPILED_TORCH]
    assert {b.key for b in site.boards} == {("untuned", "torch", "Test CPU"), ("untuned", COMPILED_TORCH, "Test CPU")}
    # Both seeds count, each on its own board, and the compiled run is not stale against the eager one.
    assert bool(runs.loc[ids[0], "scored"]) and bool(runs.loc[ids[1], "scored"])
    assert site.entries.set_index("backend")["ttt"].to_dict() == {"torch": 2.0, COMPILED_TORCH: 1.0}
    assert [b.backend for b in site.boards] == ["torch", COMPILED_TORCH]


def test_backend_labels() -> None:
    assert backend_label("torch", {"torch_compile": True}) == COMPILED_TORCH
    assert backend_label("torch", {"torch_compile": False}) == "torch"
    assert backend_label("torch", {}) == "torch" and backend_label("torch", None) == "torch"
    assert backend_label("jax", {"torch_compile": True}) == "jax"
    assert framework(COMPILED_TORCH) == "torch" and framework("jax") == "jax"


def test_a_sweep_file_asks_for_compiled_torch_runs(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('name = "c"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\ntorch_compile = true\nsteps = 5\n')
    plan = plans.load(path)
    assert plan.config.torch_compile and plan.config.to_dict()["torch_compile"] is True
    assert [s.torch_compile for s in plan.specs] == [True]
    path.write_text('name = "c"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\ntorch_compile = "yes"\n')
    with pytest.raises(ConfigError, match="torch_compile must be true or false"):
        plans.load(path)


def test_the_cli_refuses_the_option_for_jax_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    assert main(["run", "tiny-ce", "sgd", "--backend", "jax", "--torch-compile", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err == "ngbench: error: torch_compile applies to the torch backend only, not 'jax' (JAX always jits)\n"
    assert not db.exists()


@pytest.mark.slow
def test_a_compiled_run_books_compile_time_apart_and_counts_the_eager_passes() -> None:
    """tiny-ce, 12 steps: SGD's first step runs eager (its momentum buffer appears), the second
    compiles, every later step reuses the graph; the loss follows the eager run's."""
    spec = RunSpec("tiny-ce", "sgd", steps=12, device="cpu", stop_at_target=False)
    eager = execute(spec)
    compiled = execute(dataclasses.replace(spec, torch_compile=True))
    assert compiled.status == eager.status and compiled.error is None
    assert compiled.spec.torch_compile and compiled.key != eager.key
    assert (
        compiled.passes_per_step
        == eager.passes_per_step
        == {
            "forward": 1.0,
            "backward": 1.0,
            "jvp": 0.0,
            "vjp": 0.0,
            "per_sample": 0.0,
        }
    )
    # Compilation takes seconds; a compiled step of this 275-parameter MLP takes well under 50 ms.
    assert compiled.compile_time_s > 0.5
    assert compiled.step_time_median_s < 0.05 and compiled.step_time_p90_s < 0.05
    # Two warm-up steps at the median, ten steady ones: compile time stays off the time axis.
    steady = compiled.step_time_mean_s * 10
    assert compiled.train_time_s == pytest.approx(steady + 2 * compiled.step_time_median_s, rel=1e-9)
    assert compiled.final_train_loss == pytest.approx(eager.final_train_loss, rel=1e-5)
    assert compiled.flops_per_step == eager.flops_per_step


@pytest.mark.slow
def test_a_compiler_failure_fails_the_run_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._inductor.compile_fx

    def broken(graph: object, example_inputs: object) -> None:
        raise RuntimeError("no C++ compiler on this host")

    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx", broken)
    r = execute(RunSpec("tiny-ce", "sgd", steps=3, device="cpu", torch_compile=True))
    assert r.status == "error" and r.steps == 1  # the eager first step; the second compiles
    assert r.error is not None
    last = r.error.strip().splitlines()[-1]
    assert last.endswith(
        "TorchCompileError: torch.compile could not compile the SGD step "
        "(RuntimeError: no C++ compiler on this host); run it eager (without --torch-compile)"
    )
