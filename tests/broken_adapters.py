"""Deliberately broken adapters: each breaks one rule of the contract (``backends.spec``).

:class:`Good` is a correct plain-SGD adapter (the control: it passes the whole battery); every
other class changes one thing, and ``tests/test_conformance.py`` checks that
``harness.conformance`` refuses it in the right check with the right reason. Referenced as
``tests.broken_adapters:ClassName``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from backends.spec import Capabilities, HyperparameterError, LogUniform, MethodCard, adapter_class, hparam


@dataclass(frozen=True)
class PlainHyperparams:
    lr: float = hparam(0.1, doc="learning rate", low=0.0, low_inclusive=False)


CARD = MethodCard(
    name="good-sgd",
    paper="Robbins & Monro (1951)",
    description="Plain SGD: the control adapter of the broken-adapter tests.",
    Hyperparams=PlainHyperparams,
    search_space={"lr": LogUniform(1e-3, 1.0)},
    capabilities=Capabilities(step_along_direction=True),
)


class PlainState(NamedTuple):
    hparams: Any
    #: Sum of the gradients seen so far (carried, unused by the update): a tensor in the state.
    grad_sum: Tensor


class Good(adapter_class(CARD, "torch")):  # type: ignore[misc]
    """``theta <- theta - lr g``; direction ``g``."""

    def init(self, problem: Any, hparams: Any) -> Any:
        return PlainState(hparams, torch.zeros(problem.num_params, dtype=problem.dtype, device=problem.device))

    def direction(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Tensor:
        return problem.oracle(params, batch).grad()

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> tuple[Tensor, Any, dict[str, Any]]:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - hp.lr * g, PlainState(hp, state.grad_sum + g), {"loss": loss, "lr": hp.lr}


# --------------------------------------------------------------------------- not an adapter


class NotAnAdapter:
    """Has the methods, but does not subclass ``backends.spec.Adapter``."""

    name = "not-an-adapter"
    backend = "torch"
    init, step, direction = Good.init, Good.step, Good.direction


class BadName(Good):
    name = "[bold]My Optimizer[/bold]!"


class TakesBuiltinName(Good):
    name = "sgd"


class NoDirection(adapter_class(CARD, "torch")):  # type: ignore[misc]
    name = "no-direction"
    init, step = Good.init, Good.step


class NoDescription(Good):
    name = "no-description"
    description = ""


# --------------------------------------------------------------------------- hyperparameters


class HyperparamsNotADataclass(Good):
    name = "hparams-dict"
    Hyperparams = dict  # type: ignore[assignment]


@dataclass
class _MutableHP:
    lr: float = hparam(0.1, doc="learning rate", low=0.0, low_inclusive=False)


class HyperparamsNotFrozen(Good):
    name = "hparams-not-frozen"
    Hyperparams = _MutableHP


@dataclass(frozen=True)
class _MissingDefaultHP:
    lr: float  # type: ignore[misc]


class MissingDefault(Good):
    name = "missing-default"
    Hyperparams = _MissingDefaultHP
    search_space: ClassVar[Mapping[str, Any]] = {}


@dataclass(frozen=True)
class _NoDocHP:
    lr: float = 0.1


class MissingDoc(Good):
    name = "missing-doc"
    Hyperparams = _NoDocHP


@dataclass(frozen=True)
class _NoRangeHP:
    lr: float = hparam(0.1, doc="learning rate")


class NoRange(Good):
    """``lr = -1`` would be accepted: no admissible range is declared."""

    name = "no-range"
    Hyperparams = _NoRangeHP


@dataclass(frozen=True)
class _BadDefaultHP:
    lr: float = hparam(-0.1, doc="learning rate", low=0.0, low_inclusive=False)


class InvalidDefault(Good):
    name = "invalid-default"
    Hyperparams = _BadDefaultHP


class SearchSpaceUnknownName(Good):
    name = "space-unknown-name"
    search_space: ClassVar[Mapping[str, Any]] = {"learning_rate": LogUniform(1e-3, 1.0)}


class SearchSpaceOutOfRange(Good):
    """Samples ``lr`` down to 0, which the hyperparameter's range refuses."""

    name = "space-out-of-range"
    search_space: ClassVar[Mapping[str, Any]] = {"lr": LogUniform(0.0, 1.0)}


class EmptySearchSpace(Good):
    name = "empty-space"
    search_space: ClassVar[Mapping[str, Any]] = {}


class UnknownLikelihood(Good):
    name = "unknown-likelihood"
    capabilities = Capabilities(likelihoods=frozenset({"poisson"}))


class AcceptsInvalidHparams(Good):
    """Overrides ``resolve`` and skips validation: ``lr = -1`` goes through."""

    name = "accepts-invalid"

    @classmethod
    def resolve(cls, overrides: Any = None, preset: Any = None) -> Any:
        values = {k: v for k, v in (overrides or {}).items() if k == "lr"}
        if any(not isinstance(v, (int, float)) for v in values.values()):
            raise HyperparameterError("lr must be a number")
        return cls.Hyperparams(**values)


# --------------------------------------------------------------------------- structures


class StateIsDict(Good):
    name = "state-is-dict"

    def init(self, problem: Any, hparams: Any) -> Any:
        return {"hparams": hparams}

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - state["hparams"].lr * g, state, {"loss": loss, "lr": state["hparams"].lr}


class WrongShape(Good):
    name = "wrong-shape"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        new, state, stats = super().step(problem, params, state, batch)
        return new[:-1], state, stats


class WrongDtype(Good):
    name = "wrong-dtype"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        new, state, stats = super().step(problem, params, state, batch)
        return new.to(torch.float32), state, stats


class NonFiniteDirection(Good):
    name = "nan-direction"

    def direction(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Tensor:
        g = problem.oracle(params, batch).grad()
        return g / (g - g)


class ZeroDirection(Good):
    name = "zero-direction"

    def direction(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Tensor:
        return torch.zeros_like(params)


class ForgetsLoss(Good):
    name = "forgets-loss"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        new, state, stats = super().step(problem, params, state, batch)
        return new, state, {"lr": stats["lr"]}


class LossAfterUpdate(Good):
    """Reports the loss at the new parameters, not at the incoming ones."""

    name = "loss-after-update"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        new, state, stats = super().step(problem, params, state, batch)
        return new, state, {**stats, "loss": problem.oracle(new, batch).loss()}


class TensorStat(Good):
    name = "tensor-stat"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        new, state, stats = super().step(problem, params, state, batch)
        return new, state, {**stats, "update": new - params}


class MarkupStatName(Good):
    name = "markup-stat-name"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        new, state, stats = super().step(problem, params, state, batch)
        return new, state, {**stats, "<b>rho</b>": 1.0}


class Float64State(Good):
    """Keeps its gradient sum in float64 whatever the parameters' dtype."""

    name = "float64-state"

    def init(self, problem: Any, hparams: Any) -> Any:
        return PlainState(hparams, torch.zeros(problem.num_params, dtype=torch.float64, device=problem.device))

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        new, _, stats = super().step(problem, params, state, batch)
        g = problem.oracle(params, batch).grad()
        return new, PlainState(state.hparams, state.grad_sum + g.double()), stats


# --------------------------------------------------------------------------- purity


class MutatesParams(Good):
    name = "mutates-params"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        params.sub_(hp.lr * g)
        return params, PlainState(hp, state.grad_sum + g), {"loss": loss, "lr": hp.lr}


class MutatesBatch(Good):
    name = "mutates-batch"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        out = super().step(problem, params, state, batch)
        batch.x.mul_(0.5)
        return out


class MutatesState(Good):
    name = "mutates-state"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        grad_sum = state.grad_sum.add_(g)
        return params - hp.lr * g, PlainState(hp, grad_sum), {"loss": loss, "lr": hp.lr}


class Nondeterministic(Good):
    """Adds noise from torch's global generator (not from ``batch.noise``)."""

    name = "nondeterministic"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        new, state, stats = super().step(problem, params, state, batch)
        return new + 1e-3 * torch.randn_like(new), state, stats


class StateOnSelf(Good):
    """Counts its steps on ``self`` for a learning-rate decay."""

    name = "state-on-self"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        self.t = getattr(self, "t", 0) + 1
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - hp.lr / self.t * g, PlainState(hp, state.grad_sum + g), {"loss": loss, "lr": hp.lr / self.t}


class DirectionAdvances(Good):
    """Its direction grows with each call (it advances a counter on ``self``)."""

    name = "direction-advances"

    def direction(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Tensor:
        self.calls = getattr(self, "calls", 0) + 1
        return self.calls * problem.oracle(params, batch).grad()


class UnpicklableState(Good):
    name = "unpicklable-state"

    def init(self, problem: Any, hparams: Any) -> Any:
        return PlainState(hparams, lambda: None)  # type: ignore[arg-type]

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - hp.lr * g, state, {"loss": loss, "lr": hp.lr}


# --------------------------------------------------------------------------- behaviour


class DoesNotLowerLoss(Good):
    """Climbs: ``theta <- theta + lr g`` (and says so: it does not claim to step along -direction)."""

    name = "ascends"
    capabilities = Capabilities(step_along_direction=False)

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params + hp.lr * g, PlainState(hp, state.grad_sum + g), {"loss": loss, "lr": hp.lr}


class InconsistentDirection(Good):
    """Declares ``step_along_direction`` but its direction is twice the applied step's."""

    name = "inconsistent-direction"

    def direction(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Tensor:
        return 2.0 * problem.oracle(params, batch).grad()


class NoLrStat(Good):
    name = "no-lr-stat"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        new, state, stats = super().step(problem, params, state, batch)
        return new, state, {"loss": stats["loss"]}


class ReadsSuiteName(Good):
    """Picks its learning rate from the suite's name."""

    name = "reads-suite-name"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        lr = 0.1 if problem.suite.name.startswith("tiny") else 0.05
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - lr * g, PlainState(state.hparams, state.grad_sum + g), {"loss": loss, "lr": lr}


class WorkInInit(Good):
    """Computes a gradient in ``init``: work the step timer never sees."""

    name = "work-in-init"

    def init(self, problem: Any, hparams: Any) -> Any:
        g0 = problem.oracle(problem.params0, problem.device_batch(0)).grad()
        return PlainState(hparams, torch.zeros_like(g0))


class LeavesThread(Good):
    """Starts a background thread in ``init`` and leaves it running."""

    name = "leaves-thread"

    def init(self, problem: Any, hparams: Any) -> Any:
        threading.Thread(target=time.sleep, args=(3.0,), name="ngbench-test-background", daemon=True).start()
        return super().init(problem, hparams)


class RaisesInStep(Good):
    name = "raises-in-step"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        raise ValueError("adapter bug on purpose")


class Hangs(Good):
    name = "hangs"

    def step(self, problem: Any, params: Tensor, state: Any, batch: Any) -> Any:
        deadline = time.perf_counter() + 30.0
        while time.perf_counter() < deadline:
            pass
        return super().step(problem, params, state, batch)


#: ``(class name, the check that must fail, a phrase of its reason)``.
BROKEN: tuple[tuple[str, str, str], ...] = (
    ("NotAnAdapter", "adapter", "not a subclass of backends.spec.Adapter"),
    ("BadName", "adapter", "is not a lowercase slug"),
    ("TakesBuiltinName", "adapter", "taken by the built-in"),
    ("NoDirection", "adapter", "direction is not implemented"),
    ("NoDescription", "adapter", "description must be a non-empty string"),
    ("HyperparamsNotADataclass", "hyperparams", "Hyperparams is not a dataclass"),
    ("HyperparamsNotFrozen", "hyperparams", "must be a frozen dataclass"),
    ("MissingDefault", "hyperparams", "'lr' has no default"),
    ("MissingDoc", "hyperparams", "'lr' has no doc"),
    ("NoRange", "hyperparams", "'lr' has no admissible range"),
    (
        "InvalidDefault",
        "hyperparams",
        "default hyperparameters do not resolve: HyperparameterError: invalid-default: lr",
    ),
    ("SearchSpaceUnknownName", "search_space", "'learning_rate', which is not a hyperparameter"),
    ("SearchSpaceOutOfRange", "search_space", "log-uniform range needs low > 0"),
    ("EmptySearchSpace", "search_space", "the search space is empty"),
    ("UnknownLikelihood", "capabilities", "unknown likelihood(s) ['poisson']"),
    ("AcceptsInvalidHparams", "invalid_hparams", "is accepted silently"),
    ("StateIsDict", "init", "the state must be a NamedTuple"),
    ("WrongShape", "step_outputs", "returned parameters: shape (274,), expected the flat (275,)"),
    ("WrongDtype", "step_outputs", "dtype torch.float32, the parameters' is torch.float64"),
    ("NonFiniteDirection", "direction_outputs", "direction (fresh state, tiny-ce): 275 non-finite entries"),
    ("ZeroDirection", "direction_outputs", "is zero"),
    ("ForgetsLoss", "step_outputs", "stats has no 'loss'"),
    ("LossAfterUpdate", "step_outputs", "but the mean batch loss at the incoming parameters is"),
    ("TensorStat", "step_outputs", "stats['update'] is a Tensor, not a scalar"),
    ("MarkupStatName", "step_outputs", "stat name '<b>rho</b>' is not an identifier"),
    ("Float64State", "float32", "state.grad_sum is torch.float64 in a float32 run"),
    ("MutatesParams", "no_mutation", "wrote into the parameters in place"),
    ("MutatesBatch", "no_mutation", "wrote into batch.x in place"),
    ("MutatesState", "no_mutation", "wrote into state.grad_sum in place"),
    ("Nondeterministic", "deterministic", "two runs from the same seed differ"),
    ("StateOnSelf", "deterministic", "must live in the state, not on self"),
    ("DirectionAdvances", "direction_outputs", "changes when called again"),
    ("UnpicklableState", "state_roundtrip", "the state is not picklable"),
    ("DoesNotLowerLoss", "lowers_loss", "need a 1% decrease"),
    ("InconsistentDirection", "direction_consistent", "is not -stats['lr'] * direction"),
    ("NoLrStat", "direction_consistent", "stats has no 'lr'"),
    ("ReadsSuiteName", "suite_blind", "renaming suite tiny-ce changes step 0"),
    ("WorkInInit", "hidden_work", "init ran 1 forward, 1 backward pass(es)"),
    ("LeavesThread", "hidden_work", "thread(s) left running (ngbench-test-background"),
    ("RaisesInStep", "step_outputs", "step raised ValueError: adapter bug on purpose (" + __file__),
)
