"""The run loop: statuses, measurement protocol, result contents."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from backends.methods import sgd as sgd_card
from backends.spec import adapter_class
from backends.torch.optimizers.sgd import SGD
from db.statuses import STATUSES
from harness import api
from harness.runner import RunResult, RunSpec, classify_exception, execute

HERE = "tests.test_runner"


class NaNAfterThree(adapter_class(sgd_card.CARD, "torch")):  # type: ignore[misc]
    """SGD whose loss turns NaN at the fourth step."""

    name = "nan-after-three"

    def init(self, problem: Any, hparams: Any) -> Any:
        return (hparams, 0)

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> Any:
        hp, t = state
        loss, g = problem.oracle(params, batch).loss_and_grad()
        if t >= 3:
            loss = loss * float("nan")
        return params - hp.lr * g, (hp, t + 1), {"loss": loss}

    def direction(self, problem: Any, params: Any, state: Any, batch: Any) -> Any:
        return problem.oracle(params, batch).grad()


class RaisesAtTwo(NaNAfterThree):
    name = "raises-at-two"

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> Any:
        if state[1] == 2:
            raise ValueError("adapter bug on purpose")
        return super().step(problem, params, state, batch)


class Explodes(NaNAfterThree):
    name = "explodes"

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> Any:
        hp, t = state
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params + 10.0 * g * (t + 1), (hp, t + 1), {"loss": loss}


class OutOfMemory(NaNAfterThree):
    name = "oom"

    def step(self, problem: Any, params: Any, state: Any, batch: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


def run(optimizer: str, **kw: Any) -> RunResult:
    return execute(RunSpec("tiny-ce", optimizer, device="cpu", **kw))


def test_nan_loss_is_diverged() -> None:
    r = run(f"{HERE}:NaNAfterThree", steps=20)
    assert r.status == "diverged"
    assert r.steps == 4
    assert "nan" in r.error.lower()
    assert math.isnan(r.series("train_loss_batch")[2][-1])


def test_exploding_loss_is_diverged() -> None:
    r = run(f"{HERE}:Explodes", steps=50)
    assert r.status == "diverged"
    assert "threshold" in r.error


def test_adapter_exception_is_error_with_traceback() -> None:
    r = run(f"{HERE}:RaisesAtTwo", steps=20)
    assert r.status == "error"
    assert r.steps == 2
    assert "Traceback" in r.error and "ValueError: adapter bug on purpose" in r.error
    assert "test_runner.py" in r.error and "in step" in r.error


def test_out_of_memory_is_oom() -> None:
    r = run(f"{HERE}:OutOfMemory", steps=5)
    assert r.status == "oom"
    assert classify_exception(MemoryError()) == "oom"
    assert classify_exception(ValueError("x")) == "error"


def test_step_budget_is_budget_exhausted() -> None:
    r = run("sgd", steps=7, hparams={"lr": 1e-4})
    assert r.status == "budget_exhausted"
    assert r.steps == 7
    assert r.steps_to_target is None
    # Evaluations at 0 and at the end; batch losses logged every step here.
    steps, _, _ = r.series("val_accuracy")
    assert list(steps) == [0, 7]
    assert len(r.series("train_loss_batch")[0]) == 7


def test_reachable_target_is_target_reached_and_stops() -> None:
    r = run("sgd", steps=200)
    assert r.status == "target_reached"
    assert r.steps == r.steps_to_target < 200
    assert r.steps_to_target % 20 == 0  # checked at evaluations (eval_every = 20 for tiny-ce)
    assert r.best_val_metric >= 0.9
    steps, times, _ = r.series("val_accuracy")
    assert r.time_to_target_s == pytest.approx(times[list(steps).index(r.steps_to_target)])


def test_keep_training_past_the_target() -> None:
    r = run("sgd", steps=120, stop_at_target=False)
    assert r.status == "target_reached"
    assert r.steps == 120 and r.steps_to_target < 120


def test_time_budget_stops_the_run() -> None:
    r = run("sgd", steps=100_000, time_budget_s=0.02, hparams={"lr": 1e-5})
    assert r.status == "budget_exhausted"
    assert r.train_time_s >= 0.02
    assert r.steps < 100_000


def test_wall_clock_limit_is_timeout() -> None:
    r = run("sgd", steps=100_000, timeout_s=0.5, hparams={"lr": 1e-5}, eval_every=10**6)
    assert r.status == "timeout"
    assert "wall-clock" in r.error


def test_measurement_fields() -> None:
    r = run("sgd", steps=30, hparams={"lr": 1e-4})
    assert r.step_time_median_s > 0 and r.step_time_p10_s <= r.step_time_median_s <= r.step_time_p90_s
    assert r.compile_time_s >= 0 and r.init_time_s >= 0 and r.eval_time_s > 0
    # The steady-state time axis: 29 steady steps plus the warm-up step at the median.
    assert r.train_time_s == pytest.approx(r.step_time_mean_s * 29 + r.step_time_median_s, rel=1e-9)
    _, times, _ = r.series("train_loss_batch")
    assert np.all(np.diff(times) > 0)
    assert r.passes_per_step == {"forward": 1.0, "backward": 1.0, "jvp": 0.0, "vjp": 0.0, "per_sample": 0.0}
    assert r.memory_kind == "cpu_process_peak_rss" and r.peak_memory_bytes > 10 * 2**20
    assert r.environment["device_kind"] == "cpu" and r.environment["fingerprint"]
    assert r.key and r.adapter_version and r.suite_version == 1
    assert r.hparams == {"lr": 1e-4, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}
    assert r.initial_train_loss > r.final_train_loss
    assert r.status in STATUSES


def test_result_round_trips_through_dict() -> None:
    r = run("sgd", steps=5)
    again = RunResult.from_dict(r.to_dict())
    assert again.to_dict() == r.to_dict()


def test_run_key_changes_with_what_changes_results() -> None:
    base = run("sgd", steps=5)
    assert run("sgd", steps=5).key == base.key
    assert run("sgd", steps=6).key != base.key
    assert run("sgd", steps=5, seed=1).key != base.key
    assert run("sgd", steps=5, hparams={"lr": 0.02}).key != base.key
    assert run("sgd", steps=5, hparams={"lr": 0.01}).key == base.key  # the default, spelled out


def test_same_seed_same_trajectory_and_float64() -> None:
    a = run("adamw", steps=10, dtype="float64")
    b = run("adamw", steps=10, dtype="float64")
    np.testing.assert_array_equal(a.series("train_loss_batch")[2], b.series("train_loss_batch")[2])
    c = run("adamw", steps=10, dtype="float64", seed=1)
    assert not np.array_equal(a.series("train_loss_batch")[2], c.series("train_loss_batch")[2])


def test_api_direction_of_sgd_is_the_batch_gradient() -> None:
    d = api.direction("tiny-mse", "sgd", dtype="float64", step=3)
    p = api.problem("tiny-mse", dtype="float64")
    x, y, _ = p.batch(3)
    module = p.model
    z = module(torch.as_tensor(x))
    loss = (0.5 * (z - torch.as_tensor(y)) ** 2).sum(-1).mean()
    grads = torch.autograd.grad(loss, list(module.parameters()))
    np.testing.assert_allclose(d, torch.cat([g.reshape(-1) for g in grads]).numpy(), rtol=1e-12)
    assert p.loss == "mse"


def test_direction_does_not_mutate_params() -> None:
    p = api.problem("tiny-ce", dtype="float64")
    params = p.params0
    before = params.clone()
    SGD().direction(p, params, SGD().init(p, SGD.resolve()), p.device_batch(0))
    torch.testing.assert_close(params, before, rtol=0, atol=0)
