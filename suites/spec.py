"""The backend-neutral suite contract.

A :class:`Suite` is data plus a model spec plus a protocol: everything a backend needs to build
the same problem as every other backend, and everything the harness needs to run and score it.
Suites are numpy and plain Python only; no framework is imported here.

Conventions fixed by this module
--------------------------------
* The likelihood fixes the loss and the Fisher. ``softmax_ce``: per-sample loss
  ``l_n = logsumexp(z_n) - z_n[y_n]`` with integer labels. ``mse``: ``l_n = 0.5 * ||z_n - y_n||^2``
  (sum over output dimensions, unit-variance Gaussian), so the output Hessian is the identity.
* The training loss is the **mean** of ``l_n`` over the batch.
* Data order comes from :func:`batch_indices`, a pure function of (number of training samples,
  batch size, seed, step): every backend sees the same samples at the same step.
* A suite's ``version`` is bumped whenever anything that changes results changes (data,
  split, model, likelihood, batch size, budget, target). Stored results of an older version
  are kept but not ranked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from suites.datadir import data_dir, missing_message
from suites.ladder import Rung, ladder
from suites.layers import ModelSpec

# Re-exported: the streams and the functions drawing from them are part of the suite contract.
from suites.streams import NOISE_ROWS as NOISE_ROWS
from suites.streams import STREAM_DATA_ORDER as STREAM_DATA_ORDER
from suites.streams import STREAM_INIT as STREAM_INIT
from suites.streams import STREAM_NOISE as STREAM_NOISE
from suites.streams import TRAIN_EVAL_SAMPLES as TRAIN_EVAL_SAMPLES
from suites.streams import batch_indices as batch_indices
from suites.streams import batch_noise as batch_noise
from suites.streams import seed_sequence as seed_sequence
from suites.streams import train_eval_indices as train_eval_indices

Likelihood = Literal["softmax_ce", "mse"]
LIKELIHOODS: tuple[str, ...] = ("softmax_ce", "mse")

#: Evaluation runs in chunks of this many samples (memory bound on large suites).
EVAL_CHUNK = 4096
#: Target-setting runs get this fraction of a suite's step budget: AlgoPerf gives submissions a
#: runtime 1/3 longer than its target-setting runs (``docs/DOCUMENTATION.md``, "Defining target
#: performance"), i.e. the target-setting runs use 3/4 of the budget.
CALIBRATION_FRACTION = 0.75
#: Suite sizes that are scored on a board; ``test`` and ``heldout`` suites never are.
SCORED_SIZES: tuple[str, ...] = ("ci", "gpu")


class DataUnavailableError(RuntimeError):
    """A suite's data files are missing; the message says exactly what to place where."""


@dataclass(frozen=True)
class Dataset:
    """Arrays of one suite, split once and for all (the split never depends on the run seed).

    ``x_*`` are float arrays shaped ``(N, *input_shape)``, or integer token ids ``(N, T)`` for
    token models (backends keep integer inputs int64). ``y_*`` are int64 class labels
    (``softmax_ce``) or float targets shaped ``(N, num_outputs)`` (``mse``).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def fingerprint(self) -> str:
        """SHA-256 over the bytes of all four arrays (determinism checks, run provenance)."""
        h = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_val, self.y_val):
            a = np.ascontiguousarray(arr)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Target:
    """A frozen goal on an evaluation metric, e.g. ``val_accuracy >= 0.95``."""

    metric: str
    value: float
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"target mode must be 'max' or 'min', got {self.mode!r}")

    def reached(self, metrics: dict[str, float]) -> bool:
        v = metrics.get(self.metric)
        if v is None or not np.isfinite(v):
            return False
        return v >= self.value if self.mode == "max" else v <= self.value

    def describe(self) -> str:
        op = ">=" if self.mode == "max" else "<="
        return f"{self.metric} {op} {self.value:g}"


@dataclass(frozen=True)
class Calibration:
    """The evidence behind a frozen target: what ``ngbench calibrate`` measured.

    AlgoPerf's procedure in miniature (``harness/calibrate.py``): a grid of ``optimizer``
    configurations, each run with ``seeds`` seeds for ``steps`` steps (``CALIBRATION_FRACTION``
    of the budget); per configuration the median over seeds of the best validation metric;
    the best configuration's median is the target. ``values`` are that configuration's per-seed
    best validation metrics, ``grid`` the configurations tried, ``time_to_target_s`` the median
    CPU step-clock time its runs took to reach the target (the machine is described in
    ``machine``).
    """

    optimizer: str
    hparams: tuple[tuple[str, float], ...]
    grid: str
    seeds: int
    steps: int
    values: tuple[float, ...]
    backend: str = "torch"
    dtype: str = "float32"
    time_to_target_s: float | None = None
    machine: str = ""
    #: Median over the seeds of the validation metric at step 0 (before any update): the foot
    #: of the target ladder (``suites/ladder.py``); ``None`` where not measured.
    initial_value: float | None = None

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))


@dataclass(frozen=True)
class Budget:
    """Step budget, and optionally a wall-clock budget on the steady-state step clock."""

    steps: int
    time_s: float | None = None


@dataclass(frozen=True)
class DataFile:
    """A file a suite reads from the data directory (``suites/datadir.py``).

    ``names`` are alternatives relative to the data directory (e.g. a gzipped and a plain idx
    file); the first one present is used.
    """

    names: tuple[str, ...]
    description: str = ""

    def find(self, root: Path) -> Path | None:
        for name in self.names:
            path = root / name
            if path.is_file():
                return path
        return None

    def describe(self) -> str:
        return " or ".join(self.names)


@dataclass(frozen=True)
class Suite:
    """A standardized problem. See the module docstring for the conventions."""

    name: str
    version: int
    description: str
    paper: str
    model: ModelSpec
    likelihood: Likelihood
    batch_size: int
    budget: Budget
    eval_every: int
    load: Callable[[], Dataset] = field(repr=False, compare=False)
    target: Target | None = None
    #: Metric the harness reports as "best validation metric" and ranks on.
    val_metric: str = "val_accuracy"
    #: ``ci`` (runs on two CPU cores), ``test`` (tiny, for dense references), ``gpu`` (nightly),
    #: ``heldout`` (calibrates method defaults, ``ngbench calibrate-defaults``; on no board).
    size: Literal["test", "ci", "gpu", "heldout"] = "ci"
    #: Loss above ``divergence_factor * max(initial loss, 1e-3)`` (or non-finite) is divergence.
    divergence_factor: float = 100.0
    #: Files the suite needs under the data directory (``ngbench data check``).
    data_files: tuple[DataFile, ...] = ()
    #: Python packages the suite needs beyond the core dependencies (``ngbench data check``).
    packages: tuple[str, ...] = ()
    #: Where the data comes from, in words (``ngbench data check``, the suite table).
    source: str = ""
    #: How the target was set (``ngbench calibrate``); ``None`` for test suites.
    calibration: Calibration | None = None
    #: Fixed training samples the ``train_*`` metrics are evaluated on (at most).
    train_eval_samples: int = TRAIN_EVAL_SAMPLES

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"suite {self.name!r}: unknown likelihood {self.likelihood!r}")
        if self.batch_size <= 0 or self.budget.steps <= 0 or self.eval_every <= 0:
            raise ValueError(f"suite {self.name!r}: batch size, budget and eval_every must be > 0")
        if self.target is not None and self.target.metric != self.val_metric:
            raise ValueError(
                f"suite {self.name!r}: the target is on {self.target.metric}, val_metric is {self.val_metric}"
            )

    def missing(self, root: Path | str | None = None) -> list[str]:
        """What the suite needs and lacks: data files under ``root`` (default: the data
        directory, ``suites.datadir.data_dir()``) and Python packages, one line each."""
        base = data_dir(root)
        out = [f"{f.describe()} ({f.description})" if f.description else f.describe()
               for f in self.data_files if f.find(base) is None]  # fmt: skip
        out += [f"Python package {p}" for p in self.packages if importlib.util.find_spec(p) is None]
        return out

    def check_data(self, root: Path | str | None = None) -> None:
        """Raise :class:`DataUnavailableError` (one line: what to place where) if anything is missing."""
        missing = self.missing(root)
        if missing:
            raise DataUnavailableError(missing_message(self.name, data_dir(root), missing))

    @cached_property
    def data(self) -> Dataset:
        """The suite's arrays, loaded once per process (after :meth:`check_data`)."""
        self.check_data()
        return self.load()

    @property
    def num_outputs(self) -> int:
        return self.model.output_shape[-1]

    @property
    def ladder(self) -> tuple[Rung, ...]:
        """The target ladder (``suites/ladder.py``): empty without a target or an initial value."""
        if self.target is None or self.calibration is None or self.calibration.initial_value is None:
            return ()
        return ladder(self.calibration.initial_value, self.target.value, self.target.mode)

    def replace(self, **changes: object) -> Suite:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
