"""The CI-size suites: both backends from the same parameters, pinned data, targets reachable.

* Every CI suite builds in torch and JAX (float64) with the same initial parameters, the same
  loss on the first batch and the same evaluation metrics.
* Its data is deterministic across runs and machines: the SHA-256 of the arrays is pinned here,
  so a change of data (a package update, a different generator) fails; data generated in
  floating point (mnist1d) pins its labels exactly and its inputs to rounding.
* SGD and AdamW reach the frozen target within the step budget on CPU (float32, seed 0, or 2 of
  seeds 0-2 where the target is a median that seed 0 misses): AdamW with the calibrated
  configuration recorded in the suite file, SGD with the tuned configuration below (found with
  ``ngbench calibrate SUITE --optimizer sgd``). ``minilm-lora`` takes minutes per run on two
  cores: its runs are marked ``minutes`` and are deselected unless ``NGBENCH_SLOW_TESTS=1``.
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Any

import numpy as np
import pytest

from backends import jax as jax_backend
from backends import torch as torch_backend
from harness import api
from suites import get_suite, list_suites

CI_SUITES = [s.name for s in list_suites("ci")]
#: The held-out calibration suites (docs/defaults.md) get the same data and parity checks.
HELDOUT_SUITES = [s.name for s in list_suites("heldout")]

#: ``Dataset.fingerprint()`` (SHA-256 over dtype, shape and bytes of the four arrays).
FINGERPRINTS: dict[str, str] = {
    "breast-cancer-logreg": "295b1d5e7e075d3b912f567149417f0148458bed89ee9b96d004a10e1dc63039",
    "concrete-mlp": "81103fffc2d61529335f808a5629243f5f005bb2d2b6c62bd26af46a8ec2b043",
    "diabetes-mlp": "8ac82770e30deb8971512a7cdba25d00ac213af496b95a0216238f0d6439df0f",
    "digits-cnn": "06d20e98e4a3b9e47ea93a64fa4d635e1f5b6f6e42d1a8732c4f7973226e292f",
    "digits-mlp": "63b03f0c5a080dfa923e412ec3305d4d41f46eab373ebef17c625363f817b4ab",
    "minilm-lora": "d7cad5e4ab13b3766de5a7161b72f83e4fae7e2715611d1c772416dd07b1455c",
    "rosenbrock": "c2e1d05744d23aaa6985f468c061285d7f501fa24b8d37c4e00b2f990e87fd85",
}
HELDOUT_FINGERPRINTS: dict[str, str] = {
    "heldout-biomass-mlp": "9906ae4ebc841f5dfa9b5b6fcde2ce3e989b7212459ca658a7c3d2f9e9197fde",
    "heldout-wine-mlp": "f14b9b0b2138ed4fa5b02aa3d773376b113d1b3b50fcabf8211cce5265d311f5",
}

#: Suites generated in floating point (see ``test_data_is_deterministic_and_pinned``): SHA-256 of
#: the label bytes (train then validation) and (sum, L2 norm) of the train and validation inputs.
GENERATED_IN_FLOATING_POINT: dict[str, tuple[str, list[tuple[float, float]]]] = {
    "mnist1d-mlp": (
        "6feec4a017698c7fe237c8854cbd2e338c6dd5c16240f6fa79daefaaa129e169",
        [(-51.78746787509556, 399.05921097670284), (51.78746787509186, 201.87061731379174)],
    ),
    "heldout-shapes-cnn": (
        "9b68a1690fe9a46b271b22f1696126021f8e7e1f20e0487b2fbdc500d8c9ac5a",
        [(7448.167113895693, 123.8003042432912), (1875.855738878338, 61.64325537548868)],
    ),
}

#: Tuned SGD configurations (momentum 0.9 unless stated; lr grids of half-decades, seed 0, full
#: budget; the step at which each reached its target is in the comment).
SGD_CONFIGS: dict[str, dict[str, Any]] = {
    "rosenbrock": {"lr": 0.0015, "momentum": 0.95},  # 850 (0.0014 and 0.0016 diverge: the valley is chaotic)
    "breast-cancer-logreg": {"lr": 0.01},  # 80
    "diabetes-mlp": {"lr": 0.003},  # 25
    "concrete-mlp": {"lr": 0.1},  # 1650 of 2000
    "digits-cnn": {"lr": 0.1},  # 300
    "digits-mlp": {"lr": 0.03},  # never: see SGD_MISSES
    "mnist1d-mlp": {"lr": 0.1},  # 1300
    "minilm-lora": {"lr": 0.1},  # never: see SGD_MISSES
}
#: Suites whose AdamW target tuned SGD does not reach in the budget: a finding, not a bug.
SGD_MISSES: dict[str, str] = {
    "minilm-lora": (
        "SGD (momentum 0.9) on seed 0 reaches val_accuracy 0.757 at lr 0.1; lr 0.3 is unstable (0.658, final "
        "loss 15) and lr 1 diverges; AdamW's median is 0.784"
    ),
    "digits-mlp": (
        "tuned SGD tops out at val_accuracy 0.9805 (352/359) for lr in {0.01..0.3}, Nesterov, momentum 0.95, "
        "weight decay and seeds 0-2; AdamW's median is 0.9833 (353/359)"
    ),
}

SLOW_SUITES = {"minilm-lora"}
#: Suites whose reach test asks for 2 of 3 seeds: the target is a median over seeds, so what it
#: promises is that most seeds reach it. minilm-lora's seed 0 lies below it (AdamW's calibration:
#: 0.773, 0.784, 0.79); digits-cnn's target is one validation image below the median (352 of 359),
#: and float32 rounding on another CPU moves seed 0 to 350.
MAJORITY_SUITES = {"minilm-lora", "digits-cnn"}


@cache
def problems(name: str) -> tuple[Any, Any]:
    suite = get_suite(name)
    return (
        torch_backend.build_problem(suite, seed=0, dtype="float64", device="cpu"),
        jax_backend.build_problem(suite, seed=0, dtype="float64", device="cpu"),
    )


def test_the_catalogue_covers_the_papers_problems() -> None:
    assert set(CI_SUITES) | set(HELDOUT_SUITES) == set(FINGERPRINTS) | set(HELDOUT_FINGERPRINTS) | set(
        GENERATED_IN_FLOATING_POINT
    )
    assert not set(CI_SUITES) & set(HELDOUT_SUITES)
    assert {s.name for s in list_suites("gpu")} >= {"fashion-mnist-mlp", "cifar10-resnet18", "cifar100-vit-lora"}


@pytest.mark.parametrize("name", CI_SUITES + HELDOUT_SUITES)
def test_both_backends_start_from_the_same_parameters_and_loss(name: str) -> None:
    tp, jp = problems(name)
    np.testing.assert_array_equal(jp.to_numpy(jp.params0), tp.to_numpy(tp.params0))
    np.testing.assert_array_equal(tp.to_numpy(tp.params0), get_suite(name).model.init_flat(0))
    batch_t, batch_j = tp.device_batch(0), jp.device_batch(0)
    t_loss = float(tp.oracle(tp.params0, batch_t).loss())
    j_loss = float(jp.jit(lambda p, b: jp.oracle(p, b).loss())(jp.params0, batch_j))
    assert np.isfinite(t_loss)
    np.testing.assert_allclose(j_loss, t_loss, rtol=1e-10)
    if name in SLOW_SUITES:
        return  # a float64 evaluation of the transformer takes a minute per backend
    t_metrics, j_metrics = tp.evaluate(tp.params0), jp.evaluate(jp.params0)
    assert set(t_metrics) == set(j_metrics)
    for metric, value in t_metrics.items():
        np.testing.assert_allclose(j_metrics[metric], value, rtol=1e-10, err_msg=metric)


@pytest.mark.parametrize("name", CI_SUITES + HELDOUT_SUITES)
def test_data_is_deterministic_and_pinned(name: str) -> None:
    suite = get_suite(name)
    data = suite.data
    assert suite.load().fingerprint() == data.fingerprint()  # a second load (cache or regeneration) agrees
    if name in GENERATED_IN_FLOATING_POINT:
        # Generated with transcendental functions and interpolation whose last bits depend on the
        # CPU's maths library: the labels are pinned exactly, the inputs to 1e-6 in sum and norm.
        labels = hashlib.sha256(
            np.ascontiguousarray(data.y_train).tobytes() + np.ascontiguousarray(data.y_val).tobytes()
        )
        expected_labels, expected_moments = GENERATED_IN_FLOATING_POINT[name]
        assert labels.hexdigest() == expected_labels
        moments = [(float(x.sum()), float(np.linalg.norm(x))) for x in (data.x_train, data.x_val)]
        np.testing.assert_allclose(moments, expected_moments, rtol=1e-6)
    else:
        assert data.fingerprint() == {**FINGERPRINTS, **HELDOUT_FINGERPRINTS}[name]
    for x in (data.x_train, data.x_val):
        assert x.shape[1:] == suite.model.input_shape
    assert data.n_train >= suite.batch_size
    if suite.likelihood == "softmax_ce":
        assert data.y_train.dtype == np.int64 and data.y_train.max() < suite.num_outputs


def _reach_cases() -> list[Any]:
    cases = []
    for name in CI_SUITES:
        marks = [pytest.mark.slow, pytest.mark.minutes] if name in SLOW_SUITES else []
        for optimizer in ("adamw", "sgd"):
            miss = (
                [pytest.mark.xfail(reason=SGD_MISSES[name], strict=True, raises=AssertionError)]
                if optimizer == "sgd" and name in SGD_MISSES
                else []
            )
            cases.append(pytest.param(name, optimizer, marks=marks + miss, id=f"{name}-{optimizer}"))
    return cases


@pytest.mark.slow  # full-budget training runs
@pytest.mark.parametrize(("name", "optimizer"), _reach_cases())
def test_sgd_and_adamw_reach_the_target_within_the_budget(name: str, optimizer: str) -> None:
    suite = get_suite(name)
    assert suite.target is not None and suite.calibration is not None
    hparams = dict(suite.calibration.hparams) if optimizer == "adamw" else SGD_CONFIGS[name]
    if name in MAJORITY_SUITES:
        results = [
            api.run(name, optimizer, hparams=hparams, device="cpu", dtype="float32", seed=seed, time_budget_s=1e9)
            for seed in (0, 1, 2)
        ]
        reached = [r for r in results if r.status == "target_reached"]
        assert len(reached) >= 2, [(r.status, r.best_val_metric) for r in results]
        assert all(r.steps_to_target is not None and r.steps_to_target <= suite.budget.steps for r in reached)
        return
    result = api.run(name, optimizer, hparams=hparams, device="cpu", dtype="float32", seed=0, time_budget_s=1e9)
    assert result.status == "target_reached", (result.status, result.best_val_metric, suite.target.describe())
    assert result.steps_to_target is not None and result.steps_to_target <= suite.budget.steps


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_kfac_runs_on_a_model_without_kronecker_factored_layers(backend: str) -> None:
    """Rosenbrock has no Linear/Conv2d layer: K-FAC's factors are empty, its parameters are
    untapped blocks, and the 2-D quadratic model (singular to rounding near the minimum) must
    still give finite steps. It reaches the target in two evaluations."""
    result = api.run("rosenbrock", "kfac", backend=backend, device="cpu", dtype="float32", seed=0, time_budget_s=1e9)
    assert result.status == "target_reached", (result.status, result.error)
    assert result.steps_to_target is not None and result.steps_to_target <= 50
