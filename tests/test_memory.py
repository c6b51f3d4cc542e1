"""Memory figures that can fail: a step that allocates N MiB raises the peak above the run's
baseline by at least N MiB, a step that allocates nothing does not, evaluations do not count,
and the absolute peak stays the process's (docs/measurement.md, "Memory")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.memory import MemoryMeter, reset_process_peak
from harness.runner import RunSpec, execute
from tests.memory_adapters import ALLOC_MIB

MiB = 2**20
M = "tests.memory_adapters:"

pytestmark = pytest.mark.skipif(not reset_process_peak(), reason="needs Linux /proc/self/clear_refs")


def _run(optimizer: str, **kw: Any) -> Any:
    spec = RunSpec("tiny-ce", M + optimizer, steps=6, hparams={"lr": 0.05}, device="cpu", stop_at_target=False)
    return execute(spec, **kw)


def test_a_step_that_allocates_raises_the_peak_above_baseline() -> None:
    # torch's lazy imports of the first backward pass stay resident (sweep workers preload them)
    _run("Plain")
    plain, alloc = _run("Plain"), _run("Allocating")
    assert plain.status == alloc.status == "budget_exhausted", (plain.error, alloc.error)
    assert plain.memory_kind == alloc.memory_kind == "cpu_process_peak_rss"
    # Up to a MiB of the temporary may land on pages already resident at the baseline (the
    # allocator reuses freed pages; seen: 64 MiB - 100 KiB), never more.
    assert alloc.peak_memory_above_baseline_bytes >= (ALLOC_MIB - 1) * MiB
    assert plain.peak_memory_above_baseline_bytes < ALLOC_MIB * MiB // 4
    # the absolute peak is the whole process's: interpreter, torch and data included
    assert alloc.peak_memory_bytes >= alloc.peak_memory_above_baseline_bytes + 50 * MiB


def test_evaluations_do_not_count_as_step_memory() -> None:
    from backends.torch import build_problem
    from suites import get_suite

    problem = build_problem(get_suite("tiny-ce"), seed=0, dtype="float32", device="cpu")
    evaluate = problem.evaluate

    def heavy_evaluate(params: Any) -> dict[str, float]:
        scratch = np.ones(4 * ALLOC_MIB * MiB // 8)  # filled: resident while the evaluation runs
        assert scratch[-1] == 1.0
        return evaluate(params)

    problem.evaluate = heavy_evaluate
    result = _run("Plain", problem=problem)
    assert result.status == "budget_exhausted", result.error
    assert result.peak_memory_above_baseline_bytes < ALLOC_MIB * MiB // 4
    assert result.peak_memory_bytes >= 4 * ALLOC_MIB * MiB  # ... but the absolute peak saw it


class _FakeDevice:
    """A device memory source with a scripted peak; ``resettable`` like CUDA, or not like XLA."""

    kind = "fake"

    def __init__(self, resettable: bool) -> None:
        self.resettable = resettable
        self.used, self.high = 100, 500  # setup peaked at 500

    def in_use(self) -> int:
        return self.used

    def peak(self) -> int:
        return self.high

    def reset(self) -> None:
        self.high = self.used

    def touch(self, n: int) -> None:
        self.high = max(self.high, self.used + n)


def test_meter_resets_at_the_baseline_and_leaves_out_paused_work() -> None:
    dev = _FakeDevice(resettable=True)
    meter = MemoryMeter(None, source=dev)
    meter.baseline()
    dev.touch(30)  # a step
    meter.pause()
    dev.touch(1000)  # an evaluation
    meter.resume()
    dev.touch(20)  # another step
    assert meter.read() == (1100, 30, "fake")


def test_meter_books_warmup_steps_apart_unless_there_is_nothing_else() -> None:
    dev = _FakeDevice(resettable=True)
    meter = MemoryMeter(None, source=dev)
    meter.baseline()
    dev.touch(900)  # the first step compiles
    meter.step_done(warmup=True)
    dev.touch(30)
    meter.step_done(warmup=False)
    assert meter.read() == (1000, 30, "fake")
    only = MemoryMeter(None, source=_FakeDevice(resettable=True))
    only.baseline()
    only.source.touch(900)
    only.step_done(warmup=True)  # a one-step run: its only step is all there is
    assert only.read() == (1000, 900, "fake")


def test_meter_without_reset_reports_only_what_it_can_know() -> None:
    dev = _FakeDevice(resettable=False)
    meter = MemoryMeter(None, source=dev)
    meter.baseline()
    dev.touch(30)  # below the setup's peak of 500: the steps' own peak is unknown
    assert meter.read() == (500, None, "fake")
    dev.touch(700)  # above it: the steps' peak is the device's peak
    assert meter.read() == (800, 700, "fake")


def test_failed_run_before_the_baseline_has_only_the_absolute_peak() -> None:
    meter = MemoryMeter(object())
    absolute, above, kind = meter.read()
    assert absolute and absolute > 0 and above is None and kind == "cpu_process_peak_rss"


def test_an_older_database_gains_the_column_and_keeps_its_runs(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command

    from db.engine import alembic_config, head_revision
    from db.store import open_store
    from harness.runner import RunResult

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        assert "peak_memory_above_baseline_bytes" not in {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    engine.dispose()
    store = open_store(url)  # migrates to head
    spec = RunSpec("tiny-ce", "sgd", device="cpu")
    result = RunResult(spec, status="done", key="k" * 32, peak_memory_bytes=300 * MiB)
    result.peak_memory_above_baseline_bytes = 5 * MiB
    run_id = store.save_run(result)
    with store.engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        row = conn.execute(
            sa.text("SELECT peak_memory_bytes, peak_memory_above_baseline_bytes FROM runs WHERE id = :i"), {"i": run_id}
        ).one()
    store.dispose()
    assert version == head_revision() == "0005"
    assert tuple(row) == (300 * MiB, 5 * MiB)
