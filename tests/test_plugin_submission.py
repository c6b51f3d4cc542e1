"""The submission path with the reference plug-in: the battery skips what depends on a failed
step, and an unknown name hints the backend a plug-in row exists in."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness import conformance
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
        UnknownOptimizerError, match=r"unknown optimizer 'soap' for backend 'jax'; it exists for --backend torch"
    ):
        get_adapter("soap", "jax")  # the reference row SOAP is PyTorch-only
