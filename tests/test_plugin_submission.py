"""Where an outside author tripped on the submission path: one-line errors at the step that broke
the contract, hints naming the backend a name exists in, an empty tag shown empty, and the
battery skipping what depends on a failed step."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from harness import api, conformance
from harness.commands.runs import _text
from harness.errors import UnknownOptimizerError
from harness.registry import get_adapter
from tests.test_reference_rows import reference_installed  # noqa: F401 (autouse: the reference rows registered)

BAD_SHAPE = textwrap.dedent(
    """
    from typing import Any, NamedTuple

    from backends.methods import sgd
    from backends.spec import adapter_class


    class S(NamedTuple):
        hparams: Any


    class Bad(adapter_class(sgd.CARD._replace(name="badshape"), "torch")):
        def init(self, problem, hparams):
            return S(hparams)

        def direction(self, problem, params, state, batch):
            return problem.oracle(params, batch).grad()

        def step(self, problem, params, state, batch):
            loss, g = problem.oracle(params, batch).loss_and_grad()
            return (params - 0.1 * g)[:-1], state, {"loss": loss}
    """
)


@pytest.fixture
def bad_shape(tmp_path: Path) -> str:
    path = tmp_path / "bad_shape.py"
    path.write_text(BAD_SHAPE)
    return f"{path}:Bad"


def test_a_wrong_shape_fails_the_run_at_that_step_with_one_line(bad_shape: str) -> None:
    result = api.run("tiny-ce", bad_shape, "torch", steps=3, device="cpu")
    assert result.status == "error"
    assert result.error == "step 0 returned parameters of shape (274,), expected the flat (275,)"
    assert result.steps == 0


def test_check_adapter_skips_what_depends_on_a_failed_step(bad_shape: str) -> None:
    report = conformance.check_adapter(bad_shape, "torch")
    assert report["step_outputs"].failed
    assert "shape (274,)" in report["step_outputs"].reason
    for name in ("no_mutation", "deterministic", "lowers_loss", "parity", "eval_params"):
        assert report[name].status == "skip"
        assert report[name].reason == "needs a passing 'step_outputs' check"
    assert len(report.failures) == 1


def test_an_unknown_name_hints_the_backend_it_exists_in() -> None:
    with pytest.raises(UnknownOptimizerError) as info:
        get_adapter("no-such-method", "torch")
    assert "it exists for" not in str(info.value)
    with pytest.raises(
        UnknownOptimizerError, match=r"unknown optimizer 'soap' for backend 'jax'; it exists for 'torch'"
    ):
        get_adapter("soap", "jax")  # the reference row SOAP is PyTorch-only


def test_list_optimizers_names_the_distribution_of_a_plugin() -> None:
    from harness import registry

    assert registry.distribution_of(get_adapter("soap", "torch")) == "ngbench-reference 0.1.0"
    assert registry.distribution_of(get_adapter("sgd", "torch")) is None


def test_an_empty_tag_prints_empty() -> None:
    assert _text(math.nan) == "" and _text(None) == "" and _text("nightly") == "nightly"


def test_an_optimizer_nobody_was_scored_against_is_not_ranked() -> None:
    import pandas as pd

    from leaderboard.views.boards import uncompared_optimizers

    chosen = pd.DataFrame(
        {
            "optimizer": ["lone", "sgd", "adamw", "partial", "partial"],
            "suite": ["only-mine", "digits-mlp", "digits-mlp", "digits-mlp", "mine-too"],
        }
    )
    assert uncompared_optimizers(chosen) == {"lone"}  # "partial" shares digits-mlp with two others
    assert uncompared_optimizers(chosen[chosen["optimizer"] == "sgd"]) == {"sgd"}  # alone on its board
    assert uncompared_optimizers(chosen.iloc[0:0]) == set()


def test_the_dry_run_says_which_runs_will_not_be_ranked() -> None:
    from harness.commands.sweep import unranked_lines, unranked_reason
    from harness.runner import RunSpec

    full, short = RunSpec("digits-mlp", "sgd"), RunSpec("digits-mlp", "sgd", steps=200)
    assert unranked_reason(full) == ""
    assert unranked_reason(short) == "step budget 200 overrides the suite's 1500"
    assert unranked_lines([full, short, short]) == [
        "  2 of 3 run(s) will be shown but NOT ranked: step budget 200 overrides the suite's 1500 "
        "(drop the override to rank them)"
    ]
