"""A suite built for PyTorch: model, initial parameters, device data, batches, oracle, eval."""

from __future__ import annotations

import functools
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from backends.spec import Batch
from backends.torch import likelihoods
from backends.torch.compiled import CompiledStep
from backends.torch.models import TorchModel, build_module
from backends.torch.oracle import Counters, TorchOracle
from suites.spec import EVAL_CHUNK, Suite, batch_indices, batch_noise, train_eval_indices

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return dev


class _EagerStep:
    """``adapter.step`` bound to a problem; nothing compiles in eager PyTorch."""

    compile_count = 0

    def __init__(self, problem: TorchProblem, adapter: Any) -> None:
        self._problem, self._step = problem, adapter.step

    def __call__(self, params: Tensor, state: Any, batch: Batch[Tensor]) -> tuple[Tensor, Any, dict[str, Any]]:
        return self._step(self._problem, params, state, batch)


def process_peak_rss() -> int | None:
    """Peak resident set size of this process in bytes (Linux ``ru_maxrss`` is in KiB)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class TorchProblem:
    """Everything an adapter and the run loop need for one (suite, seed, dtype, device)."""

    backend = "torch"

    def __init__(self, suite: Suite, seed: int = 0, dtype: str = "float32", device: str = "cpu") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
        self.suite = suite
        self.seed = int(seed)
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.device = resolve_device(device)
        if self.device.type == "cuda":
            # Full-precision float32 convolutions and matmuls, as JAX computes them (parity).
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.likelihood = suite.likelihood
        self.batch_size = suite.batch_size
        self.num_outputs = suite.num_outputs
        self.counters = Counters()
        #: Steps this run will take at most (the harness sets it; schedules such as EF's linear
        #: decay read it, like AlgoPerf's ``step_hint``).
        self.step_budget = suite.budget.steps
        self._arrays = suite.model.init_params(self.seed)
        self.fmodel = TorchModel(suite.model, self._arrays, self.dtype, self.device)
        self.layout = self.fmodel.layout
        data = suite.data
        self.n_train = data.n_train
        self._x_train = self._inputs(data.x_train)
        self._y_train = self._targets(data.y_train)
        self._x_val = self._inputs(data.x_val)
        self._y_val = self._targets(data.y_val)
        train_index = train_eval_indices(self.n_train, suite.train_eval_samples)
        self._train_eval_index = torch.as_tensor(train_index, device=self.device)

    # ------------------------------------------------------------------ model and parameters
    @property
    def loss(self) -> str:
        """The likelihood name, ``softmax_ce`` or ``mse``."""
        return self.likelihood

    @cached_property
    def model(self) -> nn.Module:
        """A plain ``nn.Module`` holding the initial parameters (for external tools)."""
        return build_module(self.suite.model, self._arrays, self.dtype, self.device)

    @property
    def params0(self) -> Tensor:
        """Initial flat trainable parameters (a fresh copy)."""
        return self.fmodel.initial_flat.clone()

    @property
    def num_params(self) -> int:
        return self.layout.size

    def apply(self, params: Tensor, x: Tensor, *, at_tap: Any = None) -> Tensor:
        """Logits of ``x`` at the flat ``params`` (differentiable, no pass counted). ``at_tap`` is
        the JAX model hook; torch libraries take the ``nn.Module`` of :meth:`module_from_flat`."""
        if at_tap is not None:
            raise NotImplementedError("at_tap is JAX-only; use problem.module_from_flat(params) in torch")
        return self.fmodel.forward(params, x)

    def module_from_flat(self, flat: Tensor) -> nn.Module:
        """An ``nn.Module`` holding ``flat`` as its trainable parameters."""
        module = build_module(self.suite.model, self._arrays, self.dtype, self.device)
        with torch.no_grad():
            trainable = [p for p in module.parameters() if p.requires_grad]
            torch.nn.utils.vector_to_parameters(flat.detach().to(self.dtype), trainable)
        return module

    # ------------------------------------------------------------------ data
    def _tensor(self, a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    def _inputs(self, x: np.ndarray) -> Tensor:
        """Float inputs in the working dtype; integer inputs (token ids) stay int64."""
        if np.issubdtype(np.asarray(x).dtype, np.integer):
            return torch.as_tensor(np.asarray(x), dtype=torch.int64, device=self.device)
        return self._tensor(x)

    def _targets(self, y: np.ndarray) -> Tensor:
        if self.likelihood == "softmax_ce":
            return torch.as_tensor(np.asarray(y), dtype=torch.int64, device=self.device)
        return self._tensor(y)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, indices)`` numpy arrays of the training batch used at ``step``."""
        idx = batch_indices(self.n_train, self.batch_size, self.seed, step)
        data = self.suite.data
        return data.x_train[idx], data.y_train[idx], idx

    def device_batch(self, step: int) -> Batch[Tensor]:
        """The batch of ``step`` as device tensors, with the step's label-sampling noise."""
        idx = batch_indices(self.n_train, self.batch_size, self.seed, step)
        index = torch.as_tensor(idx, device=self.device)
        noise = torch.as_tensor(batch_noise(self.seed, step, self.batch_size, self.num_outputs), device=self.device)
        return Batch(self._x_train[index], self._y_train[index], index, noise)

    # ------------------------------------------------------------------ oracle, eval
    def oracle(self, params: Tensor, batch: Batch[Tensor], *, taps: bool = False) -> TorchOracle:
        return TorchOracle(self, params, batch, taps=taps)

    @torch.no_grad()
    def evaluate(self, params: Tensor) -> dict[str, float]:
        """Untimed evaluation: ``val_*`` on the validation split, ``train_*`` on a fixed subset."""
        out: dict[str, float] = {}
        splits = {
            "val": (self._x_val, self._y_val),
            "train": (self._x_train[self._train_eval_index], self._y_train[self._train_eval_index]),
        }
        for prefix, (x, y) in splits.items():
            if x.shape[0] == 0:
                continue
            z = torch.cat([self.fmodel(params, x[i : i + EVAL_CHUNK]) for i in range(0, x.shape[0], EVAL_CHUNK)])
            for name, value in likelihoods.metrics(self.likelihood, z, y).items():
                out[f"{prefix}_{name}"] = value
        return out

    def sync(self) -> None:
        """Block until queued device work is done (the timer's fence)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def to_numpy(self, t: Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    def from_numpy(self, a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ harness hooks
    def make_step(self, adapter: Any, *, compiled: bool = False) -> _EagerStep | CompiledStep:
        """The step the run loop times: eager, or under ``torch.compile`` (backends.torch.compiled)."""
        return CompiledStep(self, adapter) if compiled else _EagerStep(self, adapter)

    def make_direction(self, adapter: Any) -> Any:
        """``adapter.direction`` bound to this problem (eager; JAX jits its version)."""
        return functools.partial(adapter.direction, self)

    def block(self, *trees: Any) -> None:
        self.sync()

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> tuple[int | None, str]:
        """``(bytes, kind)``: CUDA's allocator peak, or the process's peak resident set on CPU."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device)), "cuda_max_memory_allocated"
        return process_peak_rss(), "cpu_process_peak_rss"
