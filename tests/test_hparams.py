"""Hyperparameter resolution: typing from strings, ranges, unknown names, presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from backends.spec import (
    Choice,
    HyperparameterError,
    LogUniform,
    OneMinusLogUniform,
    Uniform,
    hparam,
    resolve_hparams,
    sample_distribution,
)


@dataclass(frozen=True)
class HP:
    lr: float = hparam(0.1, doc="lr", low=0.0, low_inclusive=False)
    steps: int = hparam(3, doc="n", low=1)
    nesterov: bool = hparam(False, doc="flag")
    mode: Literal["a", "b"] = hparam("a", doc="mode")
    clip: float | None = hparam(None, doc="optional", low=0.0)


def test_defaults_and_string_coercion() -> None:
    hp = resolve_hparams(HP, {"lr": "0.5", "steps": "4", "nesterov": "true", "mode": "b", "clip": "none"})
    assert hp == HP(lr=0.5, steps=4, nesterov=True, mode="b", clip=None)
    assert resolve_hparams(HP, {"clip": "2.5"}).clip == 2.5
    assert resolve_hparams(HP) == HP()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": 0}, "lr must be > 0, got 0"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"lr": "nan"}, "lr must be a number, got NaN"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"nesterov": "maybe"}, "nesterov must be a boolean"),
        ({"mode": "c"}, "mode must be one of 'a', 'b'"),
        ({"clip": -1}, "clip must be >= 0"),
        ({"lrr": 1}, "unknown hyperparameter 'lrr'; did you mean lr?"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(overrides: dict, message: str) -> None:
    with pytest.raises(HyperparameterError, match=message.replace("(", r"\(").replace("?", r"\?")):
        resolve_hparams(HP, overrides, owner="test")


def test_presets_then_overrides() -> None:
    from backends.torch.optimizers.sgd import SGD

    assert SGD.resolve({"lr": 0.3}).lr == 0.3
    with pytest.raises(HyperparameterError, match="unknown preset"):
        SGD.resolve(preset="nope")


def test_search_space_distributions_map_the_unit_interval() -> None:
    assert sample_distribution(LogUniform(1e-4, 1.0), 0.0) == pytest.approx(1e-4)
    assert sample_distribution(LogUniform(1e-4, 1.0), 0.5) == pytest.approx(1e-2)
    assert sample_distribution(Uniform(2.0, 4.0), 0.25) == pytest.approx(2.5)
    assert sample_distribution(OneMinusLogUniform(1e-3, 0.1), 1.0) == pytest.approx(0.9)
    assert sample_distribution(Choice((1, 2, 3)), 0.999) == 3
