"""Both backends' oracles implement backends.spec.Oracle: same members, same signatures, and
the members that once existed in one backend only (``loss_value``, ``reverse(param_grad=)``)
behave alike in both."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

from backends import spec
from backends.jax import build_problem as build_jax
from backends.jax.oracle import JaxOracle
from backends.torch import build_problem as build_torch
from backends.torch.oracle import TorchOracle
from suites import get_suite

ORACLES = {"torch": (TorchOracle, build_torch), "jax": (JaxOracle, build_jax)}


def _members() -> list[str]:
    return sorted(n for n in dir(spec.Oracle) if not n.startswith("_")) + sorted(spec.Oracle.__annotations__)


def _problem(backend: str, suite: str = "tiny-ce") -> Any:
    return ORACLES[backend][1](get_suite(suite), seed=0, dtype="float64")


@pytest.mark.parametrize("backend", ORACLES)
def test_the_oracle_is_an_instance_of_the_protocol(backend: str) -> None:
    p = _problem(backend)
    oracle = p.oracle(p.params0, p.device_batch(0), taps=True)
    assert isinstance(oracle, spec.Oracle)
    missing = [m for m in _members() if not hasattr(oracle, m)]
    assert not missing


@pytest.mark.parametrize("backend", ORACLES)
def test_method_signatures_match_the_protocol(backend: str) -> None:
    cls = ORACLES[backend][0]
    for name, member in vars(spec.Oracle).items():
        if name.startswith("_") or not callable(member):
            continue
        want = [(q.name, q.kind, q.default) for q in inspect.signature(member).parameters.values()]
        got = [(q.name, q.kind, q.default) for q in inspect.signature(getattr(cls, name)).parameters.values()]
        assert got == want, f"{cls.__name__}.{name}"
    assert isinstance(inspect.getattr_static(cls, "logits"), property)


@pytest.mark.parametrize("backend", ORACLES)
def test_loss_value_is_one_forward_and_equals_loss(backend: str) -> None:
    p = _problem(backend)
    b = p.device_batch(0)
    before = p.counters.snapshot()
    value = p.oracle(p.params0, b).loss_value()
    after = p.counters.snapshot()
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {"forward": 1}
    oracle = p.oracle(p.params0, b)
    loss = oracle.loss()
    np.testing.assert_allclose(p.to_numpy(value), p.to_numpy(loss), rtol=1e-14)
    before = p.counters.snapshot()
    oracle.loss_value()  # reuses the forward that already ran
    assert p.counters.snapshot() == before


@pytest.mark.parametrize("backend", ORACLES)
def test_reverse_without_the_parameter_gradient_gives_the_taps(backend: str) -> None:
    p = _problem(backend)
    b = p.device_batch(0)
    oracle = p.oracle(p.params0, b, taps=True)
    full = oracle.reverse(oracle.logit_grads())
    taps_only = oracle.reverse(oracle.logit_grads(), param_grad=False)
    assert tuple(taps_only.param_grad.shape) == (0,)
    assert len(taps_only.tap_grads) == len(full.tap_grads) == len(p.layout.tapped)
    for a, c in zip(taps_only.tap_grads, full.tap_grads, strict=True):
        np.testing.assert_allclose(p.to_numpy(a), p.to_numpy(c), rtol=1e-13)
    no_taps = p.oracle(p.params0, b)
    with pytest.raises(RuntimeError, match="taps=True"):
        no_taps.reverse(no_taps.logit_grads(), param_grad=False)
