"""A suite built for JAX: model, initial parameters, device data, batches, oracle, eval.

:class:`JaxProblem` implements ``backends.spec.Problem`` with the same attributes and methods as
``backends.torch.TorchProblem``; the differences are JAX's:

* :meth:`JaxProblem.make_step` returns a :class:`~backends.jax.counting.CountedJit`: the
  adapter's whole ``step`` jitted, non-array state leaves (the hyperparameters) static, pass
  counts replayed per call, ``compile_count`` for the harness;
* memory is the device allocator's ``peak_bytes_in_use`` (GPU), or the process's peak
  resident set on CPU, labelled as such; JAX cannot reset the allocator peak, so it covers
  the whole (fresh, per-run) worker process;
* arrays live on the problem's device: if it is not JAX's default device, building the
  problem makes it the default of the process (``jax_default_device``), so arrays created by
  adapters land next to the parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from backends.jax import likelihoods
from backends.jax.counting import CountedJit, Counters
from backends.jax.models import JaxModel
from backends.jax.oracle import JaxOracle
from backends.spec import Batch, TapHook
from suites.spec import EVAL_CHUNK, Suite, batch_indices, batch_noise, train_eval_indices

DTYPES: dict[str, Any] = {"float32": jnp.float32, "float64": jnp.float64}

Array = jax.Array


def resolve_device(device: str) -> jax.Device:
    """``auto`` (JAX's default device: a GPU if there is one), ``cpu``, ``cuda``/``gpu`` (``:N``)."""
    if device == "auto":
        return jax.devices()[0]
    kind, _, index = device.partition(":")
    platform = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}.get(kind)
    if platform is None:
        raise ValueError(f"unknown device {device!r} (known: auto, cpu, cuda[:N], gpu[:N])")
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        raise ValueError(f"device {device!r} requested but JAX sees no {platform.upper()}") from None
    i = int(index or 0)
    if i >= len(devices):
        raise ValueError(f"device {device!r} requested but JAX sees only {len(devices)} {platform} device(s)")
    return devices[i]


def process_peak_rss() -> int | None:
    """Peak resident set size of this process in bytes (Linux ``ru_maxrss`` is in KiB)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _eval_sums(model: JaxModel, likelihood: str, flat: Array, frozen: Any, x: Array, y: Array) -> dict[str, Array]:
    return likelihoods.metric_sums(likelihood, model.apply(flat, x, frozen), y)


class JaxProblem:
    """Everything an adapter and the run loop need for one (suite, seed, dtype, device)."""

    backend = "jax"

    def __init__(self, suite: Suite, seed: int = 0, dtype: str = "float32", device: str = "cpu") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        self.suite = suite
        self.seed = int(seed)
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.device = resolve_device(device)
        default = getattr(jax.config, "jax_default_device", None)
        if self.device != jax.devices()[0] or default not in (None, self.device):
            jax.config.update("jax_default_device", self.device)
        self.likelihood = suite.likelihood
        self.batch_size = suite.batch_size
        self.num_outputs = suite.num_outputs
        self.counters = Counters()
        #: Steps this run will take at most (the harness sets it; schedules read it).
        self.step_budget = suite.budget.steps
        self._arrays = suite.model.init_params(self.seed)
        self.fmodel = JaxModel(suite.model, self._arrays, self.dtype)
        self.layout = self.fmodel.layout
        self._frozen_stack: list[Mapping[str, Array]] = []
        data = suite.data
        self.n_train = data.n_train
        self._x_train = self._inputs(data.x_train)
        self._y_train = self._targets(data.y_train)
        self._x_val = self._inputs(data.x_val)
        self._y_val = self._targets(data.y_val)
        # Indexing on the host: an eager device gather would compile a kernel per shape.
        train_index = train_eval_indices(self.n_train, suite.train_eval_samples)
        self._x_train_eval = self._inputs(data.x_train[train_index])
        self._y_train_eval = self._targets(data.y_train[train_index])
        self._gather = jax.jit(lambda x, y, index: (x[index], y[index]))
        likelihood, model = self.likelihood, self.fmodel
        self._eval_chunk = jax.jit(lambda flat, frozen, x, y: _eval_sums(model, likelihood, flat, frozen, x, y))

    # ------------------------------------------------------------------ model and parameters
    @property
    def loss(self) -> str:
        """The likelihood name, ``softmax_ce`` or ``mse``."""
        return self.likelihood

    @property
    def model(self) -> JaxModel:
        """The model: ``problem.model.apply(params, x)`` gives logits (PyTorch array layouts)."""
        return self.fmodel

    def apply(self, params: Array, x: Array, *, at_tap: TapHook | None = None) -> Array:
        """Logits of ``x`` at the flat parameters ``params``: a pure function, no pass counted.

        ``at_tap(k, s, a) -> s'`` (optional) is called at every trainable tapped layer ``k``
        (``layout.tapped`` order) with its pre-activation ``s`` and input ``a``; what it returns
        flows on in place of ``s`` (the model hook of ``backends.spec.Problem.apply``: kfac-jax
        wraps ``s`` in its layer tags here)."""
        if at_tap is None:
            return self.fmodel.apply(params, x, self.frozen)
        return self.fmodel.apply_tapped(params, x, at_tap, self.frozen)[0]

    @property
    def params0(self) -> Array:
        """Initial flat trainable parameters (a fresh device array)."""
        return jnp.asarray(self.fmodel.initial_flat)

    @property
    def num_params(self) -> int:
        return self.layout.size

    @property
    def frozen(self) -> Mapping[str, Array]:
        """Frozen parameters: the traced arguments while a counted step is traced, else the arrays."""
        return self._frozen_stack[-1] if self._frozen_stack else self.fmodel.frozen

    @contextlib.contextmanager
    def _bind_frozen(self, frozen: Mapping[str, Array]) -> Iterator[None]:
        self._frozen_stack.append(frozen)
        try:
            yield
        finally:
            self._frozen_stack.pop()

    # ------------------------------------------------------------------ data
    def _array(self, a: np.ndarray) -> Array:
        return jnp.asarray(np.asarray(a, dtype=self.dtype))

    def _inputs(self, x: np.ndarray) -> Array:
        """Float inputs in the working dtype; integer inputs (token ids) stay int64."""
        if np.issubdtype(np.asarray(x).dtype, np.integer):
            return jnp.asarray(np.asarray(x, dtype=np.int64))
        return self._array(x)

    def _targets(self, y: np.ndarray) -> Array:
        if self.likelihood == "softmax_ce":
            return jnp.asarray(np.asarray(y, dtype=np.int64))
        return self._array(y)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, indices)`` numpy arrays of the training batch used at ``step``."""
        idx = batch_indices(self.n_train, self.batch_size, self.seed, step)
        data = self.suite.data
        return data.x_train[idx], data.y_train[idx], idx

    def device_batch(self, step: int) -> Batch[Array]:
        """The batch of ``step`` as device arrays, with the step's label-sampling noise (float64)."""
        index = jnp.asarray(batch_indices(self.n_train, self.batch_size, self.seed, step))
        x, y = self._gather(self._x_train, self._y_train, index)
        noise = jnp.asarray(batch_noise(self.seed, step, self.batch_size, self.num_outputs))
        return Batch(x, y, index, noise)

    # ------------------------------------------------------------------ oracle, eval
    def oracle(self, params: Array, batch: Batch[Array], *, taps: bool = False) -> JaxOracle:
        return JaxOracle(self, params, batch, taps=taps)

    def evaluate(self, params: Array) -> dict[str, float]:
        """Untimed evaluation: ``val_*`` on the validation split, ``train_*`` on a fixed subset."""
        out: dict[str, float] = {}
        splits = {"val": (self._x_val, self._y_val), "train": (self._x_train_eval, self._y_train_eval)}
        for prefix, (x, y) in splits.items():
            n = int(x.shape[0])
            if n == 0:
                continue
            sums: dict[str, float] = {}
            for i in range(0, n, EVAL_CHUNK):
                chunk = self._eval_chunk(params, self.fmodel.frozen, x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK])
                for name, value in jax.device_get(chunk).items():
                    sums[name] = sums.get(name, 0.0) + float(value)
            for name, value in likelihoods.finish_metrics(self.likelihood, sums, n, self.num_outputs).items():
                out[f"{prefix}_{name}"] = float(value)
        return out

    def to_numpy(self, value: Array) -> np.ndarray:
        return np.asarray(jax.device_get(value))

    def from_numpy(self, array: np.ndarray) -> Array:
        return jnp.asarray(np.asarray(array), dtype=self.dtype)

    # ------------------------------------------------------------------ jitting
    def jit(self, fn: Any, *, name: str | None = None) -> CountedJit:
        """``fn`` jitted for this problem: static non-array leaves, per-call pass counts, and
        frozen parameters passed as arguments (see ``backends.jax.counting``)."""
        return CountedJit(fn, self.counters, extra=lambda: self.fmodel.frozen, bind=self._bind_frozen, name=name)

    def make_step(self, adapter: Any) -> CountedJit:
        """``adapter.step`` bound to this problem and jitted whole."""

        def step(params: Array, state: Any, batch: Batch[Array]) -> Any:
            return adapter.step(self, params, state, batch)

        return self.jit(step, name=f"{getattr(adapter, 'name', 'adapter')}.step")

    def make_direction(self, adapter: Any) -> CountedJit:
        """``adapter.direction`` bound to this problem and jitted (approximation-quality use)."""

        def direction(params: Array, state: Any, batch: Batch[Array]) -> Any:
            return adapter.direction(self, params, state, batch)

        return self.jit(direction, name=f"{getattr(adapter, 'name', 'adapter')}.direction")

    # ------------------------------------------------------------------ harness hooks
    def block(self, *trees: Any) -> None:
        """Wait until every array in ``trees`` is computed (the timer's fence)."""
        jax.block_until_ready(trees)

    def reset_peak_memory(self) -> None:
        """No-op: JAX has no API to reset the allocator's peak (runs use a fresh process)."""

    def peak_memory(self) -> tuple[int | None, str]:
        """``(bytes, kind)``: the device allocator's peak, or the process's peak resident set on CPU."""
        stats = self.device.memory_stats() if self.device.platform != "cpu" else None
        if stats and "peak_bytes_in_use" in stats:
            return int(stats["peak_bytes_in_use"]), "jax_peak_bytes_in_use"
        return process_peak_rss(), "cpu_process_peak_rss"
