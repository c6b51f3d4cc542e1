"""Peak memory of a run: above the run's baseline, and absolute (docs/measurement.md, "Memory").

The **baseline** is taken once the problem, its data and the optimizer state exist, just before
the first timed step; from then on the meter tracks the high-water mark of the training steps,
with evaluations and warm-up steps (compilation, lazy initialisation: booked apart like their
time) left out where the device lets a peak be reset. A run reports

* ``peak_memory_above_baseline_bytes``: the steps' peak minus the memory in use at the baseline
  (what the optimizer's step costs: its temporaries, factors, per-example gradients ...);
* ``peak_memory_bytes``: the absolute peak of the run's process or device (framework,
  interpreter and data included).

Per device (``memory_kind``):

* ``cpu_process_peak_rss`` (Linux): the kernel's resettable high-water mark of the resident
  set: ``/proc/self/clear_refs`` (``5``) resets ``VmHWM`` in ``/proc/self/status`` to the
  current ``VmRSS`` at the baseline and after each evaluation. Without ``/proc`` the peak is
  ``ru_maxrss``, which cannot be reset (as for JAX below).
* ``cuda_max_memory_allocated`` (PyTorch on CUDA): ``torch.cuda.reset_peak_memory_stats`` at the
  baseline and after each evaluation, ``max_memory_allocated`` minus ``memory_allocated`` at
  the baseline.
* ``jax_peak_bytes_in_use`` (JAX on a GPU): the device's ``memory_stats()``; XLA's peak cannot
  be reset, so each run has its own worker process (and ``XLA_PYTHON_CLIENT_PREALLOCATE=false``),
  evaluations are included, and the figure above the baseline is known only when the peak rose
  after the baseline (else ``None``).
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(*fields: str) -> dict[str, int] | None:
    """``VmRSS``/``VmHWM`` ... of this process in bytes, or ``None`` without ``/proc``."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in fields:
            out[name] = int(value.split()[0]) * 1024  # reported in kB
    return out if len(out) == len(fields) else None


def reset_process_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current resident set; ``False`` where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class _CpuProcess:
    kind = "cpu_process_peak_rss"

    def __init__(self) -> None:
        self.resettable = _status_bytes("VmRSS", "VmHWM") is not None and reset_process_peak()

    def in_use(self) -> int:
        got = _status_bytes("VmRSS")
        return got["VmRSS"] if got else 0

    def peak(self) -> int:
        got = _status_bytes("VmHWM")
        if got is not None:
            return got["VmHWM"]
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB

    def reset(self) -> None:
        if self.resettable:
            reset_process_peak()


class _TorchCuda:
    kind = "cuda_max_memory_allocated"
    resettable = True

    def __init__(self, device: Any) -> None:
        import torch  # the problem lives on this device: torch is imported already

        self.cuda, self.device = torch.cuda, device

    def in_use(self) -> int:
        return int(self.cuda.memory_allocated(self.device))

    def peak(self) -> int:
        return int(self.cuda.max_memory_allocated(self.device))

    def reset(self) -> None:
        self.cuda.reset_peak_memory_stats(self.device)


class _JaxDevice:
    kind = "jax_peak_bytes_in_use"
    resettable = False

    def __init__(self, device: Any) -> None:
        self.device = device

    def _stats(self) -> dict[str, Any]:
        return dict(self.device.memory_stats() or {})

    def in_use(self) -> int:
        return int(self._stats().get("bytes_in_use", 0))

    def peak(self) -> int:
        return int(self._stats().get("peak_bytes_in_use", 0))

    def reset(self) -> None:
        """XLA has no reset: the worker process is fresh per run."""


def _source(problem: Any) -> Any:
    device = getattr(problem, "device", None)
    backend = getattr(problem, "backend", None)
    if backend == "torch" and getattr(device, "type", None) == "cuda":
        return _TorchCuda(device)
    if backend == "jax" and getattr(device, "platform", "cpu") != "cpu":
        with contextlib.suppress(Exception):
            if "peak_bytes_in_use" in (device.memory_stats() or {}):
                return _JaxDevice(device)
    return _CpuProcess()


class MemoryMeter:
    """The memory figures of one run on ``problem``'s device (see the module docstring).

    ``baseline()`` before the first timed step; ``pause()``/``resume()`` around untimed work
    inside the loop (evaluations); ``read()`` at the end, also after a failed run. ``source``
    replaces the device's memory counters (``in_use``, ``peak``, ``reset``, ``resettable``,
    ``kind``), for tests.
    """

    def __init__(self, problem: Any, source: Any = None) -> None:
        self.source = source if source is not None else _source(problem)
        self.kind: str = self.source.kind
        self.absolute = self.source.peak()  # setup's peak (the CPU reset below would lose it)
        self.base: int | None = None
        self.base_peak = 0
        self.steps_peak: int | None = None
        self.warmup_peak: int | None = None
        self.steady_steps = 0
        self._paused = False

    def baseline(self) -> None:
        """Problem, data and optimizer state exist; the first timed step comes next."""
        self.absolute = max(self.absolute, self.source.peak())
        self.base_peak = self.source.peak()
        self.source.reset()
        self.base = self.source.in_use()
        self.steps_peak = None

    def step_done(self, warmup: bool) -> None:
        """A timed step ended. A warm-up step's peak (compilation, lazy initialisation) is booked
        apart, like its time (docs/measurement.md, "Compile time"), where the peak can be reset;
        it counts only if the run has no steady step at all."""
        if not warmup:
            self.steady_steps += 1
            return
        if self.base is None or not self.source.resettable:
            return
        peak = self.source.peak()
        self.absolute = max(self.absolute, peak)
        self.warmup_peak = peak if self.warmup_peak is None else max(self.warmup_peak, peak)
        self.source.reset()

    def pause(self) -> None:
        """Untimed work follows: fold the steps' peak so far in."""
        if self.base is None or self._paused or not self.source.resettable:
            return
        self._fold()
        self._paused = True

    def resume(self) -> None:
        """Steps follow again: the untimed work's peak is not theirs."""
        if not self._paused:
            return
        self.absolute = max(self.absolute, self.source.peak())
        self.source.reset()
        self._paused = False

    def _fold(self) -> None:
        peak = self.source.peak()
        self.absolute = max(self.absolute, peak)
        self.steps_peak = peak if self.steps_peak is None else max(self.steps_peak, peak)

    def read(self) -> tuple[int | None, int | None, str]:
        """``(absolute peak, peak above the baseline, kind)`` in bytes."""
        if not self._paused:
            self._fold()
        if self.steady_steps == 0 and self.warmup_peak is not None:
            self.steps_peak = max(self.steps_peak or 0, self.warmup_peak)
        above = None
        if self.base is not None and self.steps_peak is not None:
            if not self.source.resettable and self.steps_peak <= self.base_peak:
                above = None  # the peak predates the baseline and cannot be reset: the steps' own is unknown
            else:
                above = max(0, self.steps_peak - self.base)
        return self.absolute, above, self.kind
