"""Each tapped layer kind's rule (backends.layer_kinds) against the exact per-sample gradients.

For every registered kind and both backends: the per-sample weight gradient rebuilt from the
rule's rows, ``sum_t e_nt a_nt^T`` (and ``sum_t e_nt`` for the bias), equals the layer's block
of the dense per-sample gradient matrix ``J`` from autodiff, and the rule's position count is
the one the layout reports. A kind registered without a case here fails the coverage test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from backends import layer_kinds
from backends.jax.ops import JAX_OPS
from backends.torch.ops import TORCH_OPS
from suites.layers import Linear
from tests import test_jax_sample_space as jax_fixtures
from tests.fixtures_torch_sample_space import CONV, SEQUENCE, dense_jacobian, problem_oracle

#: kind -> suites whose tapped layers exercise it (with and without positions, bias or not).
CASES: dict[str, list[tuple[str, Any]]] = {
    "linear": [("tiny-ce", "tiny-ce"), ("sequence", SEQUENCE)],
    "conv2d": [("conv", CONV)],
}


def test_every_registered_kind_has_a_case() -> None:
    assert set(CASES) == layer_kinds.tapped_kinds() - {"embedding", "layer_norm"}  # not tapped by the builders yet


def test_a_kind_without_a_rule_fails_loudly() -> None:
    class Mystery(Linear):
        kind = "mystery"

    with pytest.raises(NotImplementedError, match=r"no tap rule for layer kind 'mystery'.*register"):
        layer_kinds.rule(Mystery(2, 2))
    with pytest.raises(ValueError, match="already has a rule"):
        layer_kinds.register(layer_kinds.LayerKind())


def _check_layers(layout: Any, J: np.ndarray, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> int:
    """Compare every tapped layer's rebuilt per-sample gradients with its block of ``J``."""
    checked = 0
    for layer, a, e in zip(layout.tapped, inputs, outputs, strict=True):
        if a.ndim == 2:
            a, e = a[:, None, :], e[:, None, :]
        assert a.shape[1] == e.shape[1] == layer.positions
        weight = np.einsum("nto,nti->noi", e, a).reshape(a.shape[0], -1)
        np.testing.assert_allclose(weight, J[:, layer.weight.offset : layer.weight.stop], rtol=1e-10, atol=1e-12)
        if layer.bias is not None:
            np.testing.assert_allclose(e.sum(axis=1), J[:, layer.bias.offset : layer.bias.stop], rtol=1e-10, atol=1e-12)
        checked += 1
    return checked


@pytest.mark.parametrize(("kind", "name", "suite"), [(k, n, s) for k, cases in CASES.items() for n, s in cases])
def test_rule_rows_rebuild_the_exact_per_sample_gradients_torch(kind: str, name: str, suite: Any) -> None:
    p, b, o = problem_oracle(suite)
    assert any(t.kind == kind for t in p.layout.tapped)
    J = dense_jacobian(p, b).numpy()
    rules = [layer_kinds.rule(t) for t in p.layout.tapped]
    inputs = [r.inputs(TORCH_OPS, t, a).numpy() for r, t, a in zip(rules, p.layout.tapped, o.tap_inputs(), strict=True)]
    outputs = [
        r.outputs(TORCH_OPS, t, e).numpy() for r, t, e in zip(rules, p.layout.tapped, o.tap_grads(), strict=True)
    ]
    assert _check_layers(p.layout, J, inputs, outputs) == len(p.layout.tapped)


@pytest.mark.parametrize(("kind", "name", "suite"), [(k, n, s) for k, cases in CASES.items() for n, s in cases])
def test_rule_rows_rebuild_the_exact_per_sample_gradients_jax(kind: str, name: str, suite: Any) -> None:
    p = jax_fixtures.problem(name)
    b = p.device_batch(0)
    J = jax_fixtures.dense_jacobian(p, b)
    o = p.oracle(p.params0, b, taps=True)
    rules = [layer_kinds.rule(t) for t in p.layout.tapped]
    inputs = [
        np.asarray(r.inputs(JAX_OPS, t, a)) for r, t, a in zip(rules, p.layout.tapped, o.tap_inputs(), strict=True)
    ]
    outputs = [
        np.asarray(r.outputs(JAX_OPS, t, e)) for r, t, e in zip(rules, p.layout.tapped, o.tap_grads(), strict=True)
    ]
    assert _check_layers(p.layout, J, inputs, outputs) == len(p.layout.tapped)
