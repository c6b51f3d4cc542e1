"""``wrap_torch_optimizer``: an existing ``torch.optim`` optimizer as an ngbench adapter.

The commonest submission is a maintained optimizer class (``torch.optim.Muon``,
``pytorch_optimizer.SOAP``, ``schedulefree.AdamWScheduleFree`` ...). This module turns one into
an adapter written only against the public contract::

    class SOAP(wrap_torch_optimizer(pytorch_optimizer.SOAP, card=CARD, betas=lambda hp: (hp.b1, hp.b2))):
        \"\"\"SOAP from pytorch-optimizer.\"\"\"

What the wrapper does each ``step``:

1. ``loss, g = oracle.loss_and_grad()`` (one forward, one backward, counted by the oracle);
2. copies the incoming flat parameters into the run's working buffer, whose per-layer views
   (``problem.layout``: ``flat[offset:offset + size].view(shape)``) are the optimizer's
   parameters, and sets each view's ``.grad`` to the matching view of ``g``;
3. calls ``optimizer.step()`` (each optimizer of each parameter group), which updates the
   buffer and the optimizer's own state in place;
4. returns a copy of the buffer, a new state, and ``{"loss", "lr"}``.

**Parameter groups.** ``select`` names the parameters the optimizer gets (``backends.
param_groups``: ``all``, ``matrices``, ``matrices+head``, ``rest``, ``vectors``); ``rest=part(
OtherOptimizer, **kw)`` gets the others (Muon: ``torch.optim.Muon`` on hidden matrices, AdamW on
biases and the head). ``as_2d=True`` presents weights of more than two axes (Conv2d) as
``(d_out, rest)`` matrices.

**Hyperparameters.** Keyword arguments are constants or functions of the resolved
hyperparameters (``lr=lambda hp: hp.lr``), or of the hyperparameters and the problem
(``precondition_dtype=lambda hp, problem: problem.dtype``). The main optimizer also receives every
hyperparameter whose name is one of its constructor's arguments, unless ``match_names=False``.

**State: handed on, never copied.** A torch optimizer updates its state in place. Rather than
clone it every step (which made SOAP cost about 7x SGD), the state is *move-only*: ``step`` takes
the optimizer out of the state it is given, advances it, and returns it in a new state; the
state it was given is marked consumed, and stepping a consumed state raises
:class:`~backends.spec.StateConsumedError` instead of silently continuing from buffers that have
moved on. Nothing the caller holds changes value except through that refusal, which is what makes
``step`` pure from the harness's point of view: the run loop hands each state on exactly once.
Code that needs a state twice (a test, the conformance battery, ``direction``) takes
``copy.deepcopy(state)`` first; a pickled or deep-copied state is independent and carries the
optimizer's ``state_dict``. The adapter declares this with ``capabilities.consumes_state``.

**Direction.** ``direction`` (untimed) runs one step on a deep copy and returns
``(params - new) / lr``: the update the optimizer would apply, per unit of the reported step
size. The first update is therefore ``-lr * direction``.

**Warm-ups.** Optimizers allocate their state lazily in their first ``step`` (the run loop
books PyTorch's first step as a warm-up); an optimizer with a ``train()`` mode (Schedule-Free)
is put in it when built; with ``eval_mode=True``, :meth:`eval_params` returns the parameters the
optimizer's ``eval()`` would set (Schedule-Free's averaged iterate) from a copy of the state.

A library whose first steps move no parameter (SOAP builds its preconditioner on the first
gradient and returns) says so with ``warmup_steps``: the run takes them as the library does, and
``direction`` takes them on its copy first, so a fresh state has a non-zero direction.

**Randomness.** With ``seeded=True`` the optimizer's draws from torch's and numpy's global
generators (PSGD's random probe vectors and balancing coin) come from generators seeded by the
step's batch noise and step count, inside ``torch.random.fork_rng`` (numpy's state is restored
after the step): same seed, same result, nothing leaks to the global generators.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from backends.param_groups import param_labels, select_labels
from backends.spec import Adapter, Batch, MethodCard, StateConsumedError, adapter_class


@dataclass(frozen=True)
class TorchPart:
    """One optimizer over one selection of the parameters (see the module docstring)."""

    optimizer: Callable[..., torch.optim.Optimizer]
    #: A selection name, or a function of the hyperparameters returning one.
    select: str | Callable[[Any], str] = "all"
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    match_names: bool = False

    def arguments(self, hp: Any, problem: Any = None) -> dict[str, Any]:
        """Constructor arguments: name-matched hyperparameters, then ``kwargs`` (a function is called
        with ``hp``, or with ``hp`` and the problem when it takes two arguments: ``problem.dtype``)."""
        out: dict[str, Any] = {}
        if self.match_names:
            accepted = _constructor_arguments(self.optimizer)
            out.update({f.name: getattr(hp, f.name) for f in dataclasses.fields(hp) if f.name in accepted})
        out.update({k: _value(v, hp, problem) for k, v in self.kwargs.items()})
        return out


def _value(v: Any, hp: Any, problem: Any) -> Any:
    if not callable(v) or isinstance(v, type):
        return v
    try:
        arity = len(inspect.signature(v).parameters)
    except (TypeError, ValueError):
        arity = 1
    return v(hp, problem) if arity >= 2 else v(hp)


def part(
    optimizer: Callable[..., torch.optim.Optimizer], select: str | Callable[[Any], str] = "rest", **kwargs: Any
) -> TorchPart:
    """The optimizer of the parameters the main one does not take (``rest=part(torch.optim.AdamW, ...)``)."""
    if not callable(select):
        select_labels(select)
    return TorchPart(optimizer, select, kwargs)


def _constructor_arguments(optimizer: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(optimizer).parameters) - {"self", "params"}
    except (TypeError, ValueError):
        return set()


class LiveOptimizers:
    """The live half of a move-only state: a run's ``torch.optim`` optimizers and its step count.

    :class:`WrappedTorchOptimizer` keeps one per run in an :class:`OptimizerSlot`. A library that
    runs its own forward and backward on a module (the torch model hook,
    ``problem.module_from_flat``) subclasses this, sets ``optimizers`` and ``steps``, and is built
    by overriding :meth:`WrappedTorchOptimizer.build_live`; saving and loading (what a pickle or a
    ``copy.deepcopy`` of the state carries) come from here.
    """

    optimizers: list[torch.optim.Optimizer]
    steps: int

    def save(self) -> dict[str, Any]:
        """The step count and every optimizer's ``state_dict``."""
        return {"steps": self.steps, "optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load(self, saved: dict[str, Any]) -> None:
        """Restore what :meth:`save` returned into freshly built optimizers."""
        self.steps = int(saved["steps"])
        for opt, sd in zip(self.optimizers, saved["optimizers"]):
            opt.load_state_dict(sd)


class _Live(LiveOptimizers):
    """The optimizers of one run, bound to per-layer views of one flat working buffer."""

    def __init__(self, problem: Any, hp: Any, parts: tuple[TorchPart, ...], as_2d: bool, train_mode: bool) -> None:
        layout = problem.layout
        labels = param_labels(layout)
        self.flat = torch.zeros(problem.num_params, dtype=problem.dtype, device=problem.device)
        self.blocks = layout.blocks
        self.views = [self.flat[b.offset : b.stop].view(_shape(b.shape, labels[b.name], as_2d)) for b in self.blocks]
        self.optimizers: list[torch.optim.Optimizer] = []
        self.steps = 0
        taken: set[int] = set()
        for p in parts:
            wanted = select_labels(p.select(hp) if callable(p.select) else p.select)
            chosen = [i for i, b in enumerate(self.blocks) if labels[b.name] in wanted and i not in taken]
            if chosen:
                taken.update(chosen)
                self.optimizers.append(p.optimizer([self.views[i] for i in chosen], **p.arguments(hp, problem)))
        missing = [b.name for i, b in enumerate(self.blocks) if i not in taken]
        if missing:
            raise ValueError(f"no optimizer takes parameters {missing}: add rest=part(...) for them")
        if train_mode:
            for opt in self.optimizers:
                getattr(opt, "train", lambda: None)()

    def run(self, params: Tensor, grad: Tensor) -> Tensor:
        """One step of every optimizer from ``params`` with gradient ``grad``; returns the new flat vector."""
        with torch.no_grad():
            self.flat.copy_(params)
            for view, b in zip(self.views, self.blocks):
                view.grad = grad[b.offset : b.stop].view(view.shape)
            for opt in self.optimizers:
                opt.step()
            for view in self.views:
                view.grad = None
            self.steps += 1
            return self.flat.clone()


def _shape(shape: tuple[int, ...], label: str, as_2d: bool) -> tuple[int, ...]:
    if as_2d and label in ("matrix", "head") and len(shape) > 2:
        return (shape[0], math.prod(shape[1:]))
    return shape


class OptimizerSlot:
    """The live optimizers of a run, owned by exactly one state at a time (move-only).

    Pickling (and ``copy.deepcopy``) keeps the optimizers' ``state_dict``s; the optimizers are
    rebuilt from them on the next use. A consumed slot refuses to be stepped or copied.
    """

    __slots__ = ("consumed", "live", "saved")

    def __init__(self, live: LiveOptimizers | None = None, saved: dict[str, Any] | None = None) -> None:
        self.live, self.saved, self.consumed = live, saved, False

    def __getstate__(self) -> dict[str, Any]:
        if self.consumed:
            raise StateConsumedError(_CONSUMED)
        saved = self.live.save() if self.live is not None else self.saved
        return {"saved": saved}

    def __setstate__(self, data: dict[str, Any]) -> None:
        self.live, self.saved, self.consumed = None, data["saved"], False


_CONSUMED = (
    "this state was already handed to a step: a wrapped torch optimizer advances its state in place, so each "
    "state may be stepped once (keep the state step returns; copy.deepcopy a state you need twice)"
)


class TorchOptimizerState(NamedTuple):
    hparams: Any
    slot: OptimizerSlot


class WrappedTorchOptimizer(Adapter):
    """Base of the adapters :func:`wrap_torch_optimizer` builds (set the class attributes below)."""

    parts: tuple[TorchPart, ...] = ()
    lr_name: str = "lr"
    as_2d: bool = False
    eval_mode: bool = False
    seeded: bool = False
    warmup_steps: int = 0

    # -- the contract
    def init(self, problem: Any, hparams: Any) -> TorchOptimizerState:
        return TorchOptimizerState(hparams, OptimizerSlot(self.build_live(problem, hparams)))

    def step(
        self, problem: Any, params: Tensor, state: TorchOptimizerState, batch: Batch[Tensor]
    ) -> tuple[Tensor, TorchOptimizerState, dict[str, Any]]:
        hp = state.hparams
        live = self.take_live(problem, state)
        loss, g = problem.oracle(params, batch).loss_and_grad()
        new = self._run(live, params, g, batch)
        return new, TorchOptimizerState(hp, OptimizerSlot(live)), {"loss": loss, "lr": self.step_size(hp)}

    def direction(self, problem: Any, params: Tensor, state: TorchOptimizerState, batch: Batch[Tensor]) -> Tensor:
        """``(params - new) / lr`` of one step taken on a copy of the state (untimed)."""
        hp = state.hparams
        live = self.take_live(problem, copy.deepcopy(state))
        g = problem.oracle(params, batch).grad()
        while live.steps < self.warmup_steps:  # the library's first steps move nothing: take them first
            self._run(live, params, g, batch)
        new = self._run(live, params, g, batch)
        return (params - new) / self.step_size(hp)

    def eval_params(self, problem: Any, params: Tensor, state: TorchOptimizerState) -> Tensor:
        """The optimizer's ``eval()`` parameters (``eval_mode=True``), from a copy of the state; else ``params``."""
        if not self.eval_mode:
            return params
        live = self.take_live(problem, copy.deepcopy(state))
        with torch.no_grad():
            live.flat.copy_(params)
            for opt in live.optimizers:
                getattr(opt, "eval", lambda: None)()
            return live.flat.clone()

    # -- helpers
    def step_size(self, hp: Any) -> float:
        return float(getattr(hp, self.lr_name))

    def build_live(self, problem: Any, hp: Any) -> LiveOptimizers:
        """A run's live optimizers from its hyperparameters (override for a library that needs the module)."""
        return _Live(problem, hp, self.parts, self.as_2d, train_mode=True)

    def take_live(self, problem: Any, state: TorchOptimizerState) -> Any:
        """Move the live optimizers out of ``state`` (rebuilding them after a pickle); refuse a consumed state."""
        slot = state.slot
        if slot.consumed:
            raise StateConsumedError(_CONSUMED)
        live = slot.live
        if live is None:
            live = self.build_live(problem, state.hparams)
            if slot.saved is not None:
                live.load(slot.saved)
        slot.consumed, slot.live, slot.saved = True, None, None
        return live

    def _run(self, live: _Live, params: Tensor, grad: Tensor, batch: Batch[Tensor]) -> Tensor:
        if not self.seeded:
            return live.run(params, grad)
        devices = [params.device] if params.device.type == "cuda" else []
        numpy_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=devices):
                seed = _noise_seed(batch) + live.steps
                torch.manual_seed(seed)
                np.random.seed(seed % 2**32)
                return live.run(params, grad)
        finally:
            np.random.set_state(numpy_state)


def _noise_seed(batch: Batch[Tensor]) -> int:
    """A seed from the step's batch noise (the contract's only source of randomness)."""
    u = float(batch.noise.reshape(-1)[0]) if batch.noise.numel() else 0.0
    return int(u * 2**31) % (2**31 - 1)


def wrap_torch_optimizer(
    optimizer: Callable[..., torch.optim.Optimizer],
    *,
    card: MethodCard,
    select: str | Callable[[Any], str] = "all",
    rest: TorchPart | None = None,
    lr_name: str = "lr",
    as_2d: bool = False,
    eval_mode: bool = False,
    seeded: bool = False,
    warmup_steps: int = 0,
    match_names: bool = True,
    **kwargs: Any,
) -> type[WrappedTorchOptimizer]:
    """An adapter class (subclass it, or bind it to a name) running ``optimizer`` on ``card``'s hyperparameters.

    ``optimizer(params, **kw)``: a ``torch.optim.Optimizer`` class or factory;
    ``select``/``rest``: parameter groups (a selection may be a function of the hyperparameters);
    ``lr_name``: the hyperparameter reported as ``stats["lr"]`` (and the scale of the direction);
    ``as_2d``: Conv2d weights as matrices;
    ``eval_mode``: evaluate at the parameters of the optimizer's ``eval()``;
    ``seeded``: the optimizer draws random numbers;
    ``warmup_steps``: leading library steps that move no parameter (SOAP's first step only builds
    its preconditioner), taken on the copy before ``direction`` measures one;
    ``kwargs``: constructor arguments (constants or functions of the hyperparameters). See the
    module docstring.
    """
    if select != "all" and rest is None:
        raise ValueError(f"select={select!r} leaves parameters without an optimizer: pass rest=part(...)")
    main = TorchPart(optimizer, select, kwargs, match_names)
    parts = (main,) if rest is None else (main, rest)
    caps = dataclasses.replace(card.capabilities, consumes_state=True)
    base = adapter_class(card._replace(capabilities=caps), "torch")
    cls = type(
        f"Wrapped{card.name.title().replace('-', '').replace('_', '')}",
        (WrappedTorchOptimizer, base),
        {
            "parts": parts,
            "lr_name": lr_name,
            "as_2d": as_2d,
            "eval_mode": eval_mode,
            "seeded": seeded,
            "warmup_steps": warmup_steps,
            "__module__": _caller_module(),
        },
    )
    return cls


def _caller_module() -> str:
    """The module that called the wrapper (so the run key hashes the plug-in's source)."""
    frame = sys._getframe(2)
    return str(frame.f_globals.get("__name__", __name__))
