"""Adapters that fail on purpose, for the sweep fault-injection tests.

Each is plain SGD (``theta <- theta - lr * g``) until its fault fires at :data:`FAULT_STEP`;
sweeps reference them as ``tests.faulty_adapters:<Class>``. Every class has its own ``name``
because a run's key includes the adapter name.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, NamedTuple

from backends.methods import sgd
from backends.spec import Batch, Capabilities, adapter_class

#: The step at which the faults fire (0-based).
FAULT_STEP = 2
#: Substring of every database URL the tests hand the parent; a worker must never see it.
SECRET_MARK = "ngbench-test-secret"


class FaultState(NamedTuple):
    hparams: Any
    step: int


class _PlainSGD(adapter_class(sgd.CARD, "torch")):  # type: ignore[misc]
    """SGD without momentum; subclasses inject their fault in :meth:`fault`."""

    def init(self, problem: Any, hparams: Any) -> FaultState:
        return FaultState(hparams, 0)

    def direction(self, problem: Any, params: Any, state: FaultState, batch: Batch[Any]) -> Any:
        return problem.oracle(params, batch).grad()

    def fault(self, params: Any, state: FaultState) -> Any:
        return params

    def step(self, problem: Any, params: Any, state: FaultState, batch: Batch[Any]) -> tuple[Any, FaultState, dict]:
        loss, g = problem.oracle(params, batch).loss_and_grad()
        new = params - state.hparams.lr * g
        if state.step >= FAULT_STEP:
            new = self.fault(new, state)
        return new, FaultState(state.hparams, state.step + 1), {"loss": loss, "lr": state.hparams.lr}


class Diverging(_PlainSGD):
    """Scales the parameters by 10 every step from the fault step on: the loss explodes."""

    name = "faulty-diverging"

    def fault(self, params: Any, state: FaultState) -> Any:
        return params * 10.0


class Raising(_PlainSGD):
    name = "faulty-raising"

    def fault(self, params: Any, state: FaultState) -> Any:
        raise ValueError(f"injected failure at step {state.step}")


class CrossEntropyOnly(Raising):
    """Declares no support for the ``mse`` likelihood (sweeps skip such combinations)."""

    name = "faulty-ce-only"
    capabilities = Capabilities(likelihoods=frozenset({"softmax_ce"}))


class Sleeping(_PlainSGD):
    """Hangs inside a step (never returns to the run loop's own timeout check)."""

    name = "faulty-sleeping"

    def fault(self, params: Any, state: FaultState) -> Any:
        time.sleep(3600)
        return params


class Exiting(_PlainSGD):
    """Kills its own process with ``os._exit(3)`` after a last word on stderr."""

    name = "faulty-exiting"

    def fault(self, params: Any, state: FaultState) -> Any:
        print("faulty-exiting: goodbye from the worker", file=sys.stderr, flush=True)
        os._exit(3)


class SelfKilled(_PlainSGD):
    """Dies of SIGKILL, as under the kernel's out-of-memory killer."""

    name = "faulty-sigkill"

    def fault(self, params: Any, state: FaultState) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
        return params


class OutOfMemory(_PlainSGD):
    name = "faulty-oom"

    def fault(self, params: Any, state: FaultState) -> Any:
        raise MemoryError("injected: cannot allocate 64 GiB")


class CudaOutOfMemory(_PlainSGD):
    name = "faulty-cuda-oom"

    def fault(self, params: Any, state: FaultState) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")


class CredentialProbe(_PlainSGD):
    """Fails the run if what the worker was given leads to the database: its environment
    (``os.environ`` and the process's initial environment block) or its command line."""

    name = "faulty-credential-probe"

    def fault(self, params: Any, state: FaultState) -> Any:
        leaks = [k for k, v in os.environ.items() if SECRET_MARK in v or k in ("NGBENCH_DB_URL", "DATABASE_URL")]
        for part in ("environ", "cmdline"):
            try:
                with open(f"/proc/self/{part}", "rb") as f:
                    if SECRET_MARK.encode() in f.read():
                        leaks.append(f"/proc/self/{part}")
            except OSError:
                pass
        if leaks:
            raise RuntimeError(f"credential leak: {', '.join(leaks)}")
        return params


class SlowSGD(_PlainSGD):
    """SGD with two knobs read from the worker's environment, for the nightly tests: a sleep of
    ``NGBENCH_TEST_STEP_DELAY`` seconds inside every step (a step-time regression) and a factor
    ``NGBENCH_TEST_LR_SCALE`` on the learning rate (a convergence change). Neither is a
    hyperparameter, so the runs stay in the same comparison group across nightlies."""

    name = "slow-sgd"

    def step(self, problem: Any, params: Any, state: FaultState, batch: Batch[Any]) -> tuple[Any, FaultState, dict]:
        delay = float(os.environ.get("NGBENCH_TEST_STEP_DELAY", "0"))
        if delay:
            time.sleep(delay)
        lr = state.hparams.lr * float(os.environ.get("NGBENCH_TEST_LR_SCALE", "1"))
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - lr * g, FaultState(state.hparams, state.step + 1), {"loss": loss, "lr": lr}


class CountedSGD(SlowSGD):
    """:class:`SlowSGD` that leaves one marker file per execution in ``NGBENCH_TEST_MARKER_DIR``
    (named by the worker's pid: every run has its own process), so a test can count how often
    runs were executed."""

    name = "counted-sgd"

    def init(self, problem: Any, hparams: Any) -> FaultState:
        folder = os.environ.get("NGBENCH_TEST_MARKER_DIR")
        if folder:  # one per worker process (the run loop calls init again to count FLOPs)
            with open(os.path.join(folder, f"run-{os.getpid()}"), "w"):
                pass
        return super().init(problem, hparams)


class IgnoringInterrupt(_PlainSGD):
    """Ignores SIGINT and hangs from the fault step on: only SIGKILL stops it (a worker stuck in
    native code)."""

    name = "faulty-ignoring-interrupt"

    def fault(self, params: Any, state: FaultState) -> Any:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        folder = os.environ.get("NGBENCH_TEST_MARKER_DIR")
        if folder:  # tells a test the run is now in its hung step
            with open(os.path.join(folder, f"hung-{os.getpid()}"), "w"):
                pass
        time.sleep(3600)
        return params
