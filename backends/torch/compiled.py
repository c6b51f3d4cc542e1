"""Compiled PyTorch: an adapter's step under ``torch.compile``, the torch counterpart of ``jax.jit``.

The whole step ``(params, state, batch) -> (params, state, stats)`` is compiled by TorchDynamo
with the inductor backend (C++/OpenMP kernels on CPU, Triton on CUDA), as AlgoPerf runs its
PyTorch workloads. Four choices keep it compiled once or twice per run, not once per step:

* **Pass counters stay outside the graph's guards.** The oracle adds to ``problem.counters``
  on every pass. Traced against the run's counters, Dynamo would guard on their current values
  (``counts['forward'] == 41``) and recompile at every step. During a compiled call the problem
  holds a step-local tally, zero before every call, so the guard ``== 0`` always holds; Dynamo
  replays the tally's increments after the graph, and they are moved to the run's counters.
  The counts are the eager step's, exactly.
* **Reverse passes are traced** (``torch._dynamo.config.trace_autograd_ops``): the oracle's
  ``torch.autograd.grad`` becomes part of the graph instead of a graph break around it.
* **Automatic dynamic shapes** (``dynamic=None``): a Python number of the state that changes
  from step to step (AdamW's step count) is compiled once more as a symbol, then reused; tensor
  shapes never change within a run and stay static.
* **The first step runs eager.** An adapter's ``init`` may return a state whose structure the
  first step changes (SGD's momentum buffer is ``None`` until then); compiled at the first
  step, the step would be compiled again at the second. Eager, the first step brings the state
  to its steady structure, and compilation starts at the second step.

``compile_count`` counts every graph the backend compiles, so the harness books every step
that compiled (and the first, as for any eager step) as warm-up, its excess over the median
step as compile time, exactly as for JAX.

A method whose step Dynamo cannot trace whole (a graph break: per-sample gradients under
``vmap``, ``Tensor.item()``) still runs: the pieces between breaks are compiled, the breaks run
eagerly. A compiler failure is not hidden, nor is a step that keeps recompiling (Dynamo's
recompile limit, after which it would silently run eager), nor a step that fails compiled but
not eager (EGN: PyTorch cannot call a compiled backward inside ``vmap``): each raises
:class:`TorchCompileError` with one line, and the run is stored as failed with that message.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from backends.spec import Batch
from backends.torch.oracle import Counters


class TorchCompileError(RuntimeError):
    """``torch.compile`` could not compile an adapter's step."""


def _configure_dynamo() -> None:
    """Process-wide Dynamo settings (eager PyTorch reads none of them): trace
    ``torch.autograd.grad`` into the graph, and raise instead of silently running eager when a
    step keeps recompiling. A setting this PyTorch lacks is left alone. Dynamo is imported here,
    not with the backend: importing it takes seconds."""
    import torch._dynamo

    for name in ("trace_autograd_ops", "fail_on_recompile_limit_hit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, True)


def _reason(exc: BaseException) -> str:
    """The first line of the innermost error (Dynamo wraps the backend's own)."""
    inner = getattr(exc, "inner_exception", None) or exc.__cause__ or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


class CompiledStep:
    """``adapter.step`` bound to a problem and compiled with ``torch.compile`` (inductor).

    ``compile_count`` is the number of graphs compiled so far; the harness books a call during
    which it grows as warm-up (docs/measurement.md, "Compiled PyTorch").
    """

    def __init__(self, problem: Any, adapter: Any) -> None:
        _configure_dynamo()
        self.compile_count = 0
        self._problem, self._step, self._name = problem, adapter.step, type(adapter).__name__
        self._tally = Counters()
        self._eager_first = True
        self._compiled = torch.compile(self._eager, backend=self._inductor, dynamic=None, fullgraph=False)

    def _inductor(self, graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        """The inductor backend, counting the graphs it is given."""
        from torch._inductor.compile_fx import compile_fx

        self.compile_count += 1
        return compile_fx(graph, example_inputs)

    def _eager(self, params: Tensor, state: Any, batch: Batch[Tensor]) -> tuple[Tensor, Any, dict[str, Any]]:
        return self._step(self._problem, params, state, batch)

    def __call__(self, params: Tensor, state: Any, batch: Batch[Tensor]) -> tuple[Tensor, Any, dict[str, Any]]:
        if self._eager_first:  # the state takes its steady structure (module docstring)
            self._eager_first = False
            return self._step(self._problem, params, state, batch)
        problem, tally = self._problem, self._tally
        counters = problem.counters
        problem.counters = tally
        try:
            return self._compiled(params, state, batch)
        except (torch._dynamo.exc.TorchDynamoException, torch._dynamo.exc.FailOnRecompileLimitHit) as exc:
            failure: BaseException = exc
        except Exception as exc:
            # An error of the adapter, or of compiled PyTorch? The eager step on the same inputs
            # tells (its own error is the adapter's, raised as is).
            failure = exc
            problem.counters = Counters()
            self._step(problem, params, state, batch)
        finally:
            problem.counters = counters
            counters.add_scaled(tally.counts, 1)
            for kind in tally.counts:
                tally.counts[kind] = 0
        raise TorchCompileError(
            f"torch.compile could not compile the {self._name} step ({_reason(failure)}); "
            "run it eager (without --torch-compile)"
        ) from None
