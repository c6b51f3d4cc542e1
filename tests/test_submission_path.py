"""Where an outside submitter trips: messages and listings that say what they need to know."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.store import open_store
from harness import registry
from harness.cli import app
from harness.errors import UnknownOptimizerError
from harness.runner import RunSpec, execute


def test_unknown_optimizer_names_the_backend_where_it_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.adapters

    def fake(backend: str) -> dict:
        out = dict(real(backend))
        if backend == "jax":
            out["onlyjax"] = out["sgd"]
        return out

    monkeypatch.setattr(registry, "adapters", fake)
    with pytest.raises(UnknownOptimizerError) as err:
        registry.get_adapter("onlyjax", "torch")
    assert "unknown optimizer 'onlyjax' for backend 'torch'; it exists for --backend jax" in str(err.value)
    with pytest.raises(UnknownOptimizerError) as err:
        registry.get_adapter("nowhere", "torch")
    assert "exists for" not in str(err.value)


def test_list_optimizers_says_where_each_adapter_comes_from() -> None:
    result = CliRunner().invoke(app, ["list", "optimizers", "--backend", "torch"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "from" in result.output
    assert "built-in (backends.torch.optimizers.sgd)" in result.output


def test_runs_prints_an_empty_tag_as_empty(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    store = open_store(db)
    store.save_run(execute(RunSpec("tiny-ce", "sgd", steps=3, device="cpu")))
    store.dispose()
    table = CliRunner().invoke(app, ["runs", "--db", db], env={"COLUMNS": "300"})
    assert table.exit_code == 0
    assert "nan" not in table.output


_BAD_ADAPTERS = """
from typing import Any, NamedTuple

from backends.methods import sgd
from backends.spec import adapter_class


class S(NamedTuple):
    hparams: Any


class ShortParams(adapter_class(sgd.CARD, "BACKEND")):
    name = "short-params"

    def init(self, problem, hparams):
        return S(hparams)

    def direction(self, problem, params, state, batch):
        return problem.oracle(params, batch).grad()

    def step(self, problem, params, state, batch):
        g = problem.oracle(params, batch).grad()
        return params[:10] - g[:10], state, {"loss": g.sum()}


class NoLoss(ShortParams):
    name = "no-loss"

    def step(self, problem, params, state, batch):
        g = problem.oracle(params, batch).grad()
        return params - 0.1 * g, state, {"lr": 0.1}


class Mismatch(ShortParams):
    name = "mismatch"

    def step(self, problem, params, state, batch):
        g = problem.oracle(params, batch).grad()
        return params - g @ g[:3], state, {"loss": g.sum()}
"""


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_step_that_breaks_the_contract_stops_the_run_at_once_with_one_line(tmp_path: Path, backend: str) -> None:
    path = tmp_path / f"bad_{backend}.py"
    path.write_text(_BAD_ADAPTERS.replace("BACKEND", backend))
    short = execute(RunSpec("tiny-ce", f"{path}:ShortParams", backend=backend, steps=5, device="cpu"))
    assert short.status == "error"
    assert short.steps == 0  # stopped at the step that broke it (not counted), not one step later
    assert short.error == "StepContractError: step 0 returned parameters: shape (10,), expected the flat (275,)"
    no_loss = execute(RunSpec("tiny-ce", f"{path}:NoLoss", backend=backend, steps=5, device="cpu"))
    assert no_loss.error.startswith("StepContractError: step 0: stats has no 'loss'")


def test_a_jax_error_ends_with_the_exception_not_jaxs_filtering_note(tmp_path: Path) -> None:
    path = tmp_path / "bad_jax.py"
    path.write_text(_BAD_ADAPTERS.replace("BACKEND", "jax"))
    result = execute(RunSpec("tiny-ce", f"{path}:Mismatch", backend="jax", steps=5, device="cpu"))
    assert result.status == "error"
    last = result.error.strip().splitlines()[-1]
    assert last.startswith("TypeError: dot_general requires contracting dimensions"), last
    assert "JAX has removed its internal frames" not in result.error


def test_a_board_ranks_only_optimizers_compared_on_a_shared_suite() -> None:
    import pandas as pd

    from leaderboard.views.boards import compared_only

    chosen = pd.DataFrame(
        {
            "optimizer": ["sgd", "adamw", "sgd", "mine", "lonely"],
            "suite": ["digits-mlp", "digits-mlp", "wine-mlp", "iris-mlp", "concrete-mlp"],
        }
    )
    suites = ["digits-mlp", "wine-mlp", "iris-mlp", "concrete-mlp"]
    assert compared_only(chosen, suites, ["sgd", "adamw", "mine", "lonely"]) == ["mine", "lonely"]
    # One optimizer alone on a board is listed, never ranked first with score 1.0.
    assert compared_only(chosen[chosen["optimizer"] == "mine"], ["iris-mlp"], ["mine"]) == ["mine"]
    assert compared_only(chosen, [], ["sgd"]) == []


def test_sweep_dry_run_says_which_runs_will_not_be_ranked_and_why(tmp_path: Path) -> None:
    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd", "adamw"]\nsteps = 5\n')
    result = CliRunner().invoke(app, ["sweep", str(sweep), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 of 2 run(s) will be stored but not ranked" in result.output
    assert "#0, #1: tiny-ce: step budget 5 (the suite's: 200)" in result.output
    sweep.write_text('name = "x"\nsuites = ["tiny-ce"]\noptimizers = ["sgd", "adamw"]\n')
    result = CliRunner().invoke(app, ["sweep", str(sweep), "--dry-run"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "not ranked" not in result.output
