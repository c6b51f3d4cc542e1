"""The adapter contract: what every optimizer adapter is and promises, in either backend.

An adapter is a class with class-level metadata and three pure methods (optax-like: the state
is a typed tuple, nothing is mutated in place)::

    name, backend, paper, description       # who it is
    Hyperparams                              # a frozen dataclass: typed defaults, ranges, docs
    search_space                             # name -> Distribution, for the tuned track
    capabilities                             # what it supports and declares (Capabilities)

    init(problem, hparams) -> state
    step(problem, params, state, batch) -> (params, state, stats)
    direction(problem, params, state, batch) -> flat direction

* ``params`` is the flat vector of trainable parameters in canonical order (see
  ``suites.layers``), a framework array. ``step`` returns a new vector and never writes into
  the one it was given, nor into ``batch``.
* ``state`` is a ``NamedTuple`` holding the resolved ``hparams`` as its first field and
  whatever the method carries between steps; it must survive a pickle round trip.
* ``stats`` maps names to scalars. ``loss`` (the mean batch loss at the incoming parameters,
  which the step computes anyway) is required; methods add their own (``lr``, ``damping``,
  ``rho`` ...). Passes (forward, backward, JVP, VJP) are counted by the oracle, not reported.
* ``direction`` is the method's preconditioned gradient on ``batch`` at ``params``, before the
  step size, signed like the gradient (ascent): ``sgd``'s direction is the gradient of the mean
  batch loss. It does not advance the state. Approximation quality is measured on it.
* Every Tikhonov damping hyperparameter is called ``damping`` and means a term ``damping * I``
  added to the mean-loss-convention curvature matrix (``B * damping`` in sample space).

Adapters receive the problem (:class:`Problem`) and the batch; everything they know of the model
comes from ``problem.oracle(params, batch, taps=...)`` (:class:`Oracle`: losses, gradients, taps,
JVP/VJP, GGN products, sampled labels, each pass counted) and ``problem.layout``
(:class:`ParamLayout`, from ``backends.layout``: where each parameter and tapped layer sits in
the flat vector). They may branch on parameter shapes and layer kinds but must never read the
suite's name or data to pick hyperparameters, and must do all their per-step work inside
``step`` where the timer sees it.

Wrapping an existing optimizer: ``wrap_torch_optimizer(cls, card=..., **kw)`` (a ``torch.optim``
optimizer; move-only state, see :attr:`Capabilities.consumes_state`) and ``wrap_optax(tx_factory,
card=...)`` (an optax transformation) build adapters from this contract alone, with the
parameter groups of ``backends.param_groups``; both are re-exported here lazily. A library that
runs its own forward and backward on the model's ``nn.Module`` (``problem.module_from_flat``)
subclasses ``LiveOptimizers`` and overrides the wrapped adapter's ``build_live``.

An optional hook, :meth:`Adapter.eval_params`, gives the parameters to evaluate at (untimed).

Third-party adapters register under the entry-point group :data:`ENTRY_POINT_GROUP`.
"""

from __future__ import annotations

import importlib
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

from backends.hparams import PROVENANCES as PROVENANCES  # the hyperparameter part of the contract
from backends.hparams import HeldOutEvidence as HeldOutEvidence
from backends.hparams import HyperparameterError as HyperparameterError
from backends.hparams import hparam as hparam
from backends.hparams import hparam_fields as hparam_fields
from backends.hparams import hparams_dict as hparams_dict
from backends.hparams import resolve_hparams as resolve_hparams
from backends.layout import ParamLayout

ENTRY_POINT_GROUP = "ngbench.optimizers"
BACKENDS: tuple[str, ...] = ("torch", "jax")

ArrayT = TypeVar("ArrayT")


# --------------------------------------------------------------------------- search spaces


class LogUniform(NamedTuple):
    """log-uniform on [low, high]."""

    low: float
    high: float


class Uniform(NamedTuple):
    low: float
    high: float


class OneMinusLogUniform(NamedTuple):
    """``1 - x`` with ``x`` log-uniform on [low, high] (momenta near 1, as in AlgoPerf)."""

    low: float
    high: float


class Choice(NamedTuple):
    values: tuple[Any, ...]


Distribution = LogUniform | Uniform | OneMinusLogUniform | Choice


def sample_distribution(dist: Distribution, u: float) -> Any:
    """Map ``u`` in [0, 1) to a value of ``dist`` (quasi-random samplers feed ``u``)."""
    if isinstance(dist, LogUniform):
        return float(math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low))))
    if isinstance(dist, Uniform):
        return float(dist.low + u * (dist.high - dist.low))
    if isinstance(dist, OneMinusLogUniform):
        x = math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))
        return float(1.0 - x)
    if isinstance(dist, Choice):
        return dist.values[min(int(u * len(dist.values)), len(dist.values) - 1)]
    raise TypeError(f"unknown distribution {dist!r}")


# --------------------------------------------------------------------------- capabilities


@dataclass(frozen=True)
class Capabilities:
    """What an adapter supports and declares about itself (checked by ``check-adapter``)."""

    #: Likelihoods the method handles.
    likelihoods: frozenset[str] = frozenset({"softmax_ce", "mse"})
    #: The applied update is ``params - lr * direction`` for some scalar ``lr`` reported in
    #: ``stats["lr"]``. Methods with momentum or line searches declare ``False``.
    step_along_direction: bool = True
    #: Uses the batch's sample indices (FNGD's per-sample coefficient table).
    uses_sample_indices: bool = False
    #: Uses the batch noise to sample labels from the model (SF, K-FAC).
    samples_labels: bool = False
    #: Materialises per-sample quantities whose memory grows as batch x params (EF, iEF, SF,
    #: EGN); the approximation-quality track skips it above ``max_params`` if set.
    max_params: int | None = None
    #: Whether ``direction`` depends on state accumulated over earlier steps (K-FAC's factor
    #: EMA, Adam moments, FNGD's table). ``None``: undeclared, the approximation-quality track
    #: infers it from the state's contents.
    stateful_direction: bool | None = None
    #: The state is *move-only*: ``step`` may advance the buffers of the state it is given in
    #: place and hand them on in the state it returns; the given state is then consumed, and
    #: stepping it again raises :class:`StateConsumedError`. The run loop hands each state on
    #: exactly once; code that needs a state twice ``copy.deepcopy``-s it first (the battery
    #: does). ``wrap_torch_optimizer`` declares it: a torch optimizer's state is updated in place.
    consumes_state: bool = False
    #: Whether the torch and JAX adapters of this name promise to agree (``parity`` check, float64,
    #: rtol 1e-6). ``False`` for wrappers of two different libraries (Muon: ``torch.optim.Muon``
    #: orthogonalises in bfloat16, ``optax.contrib.muon`` in the working dtype): no parity is claimed.
    cross_backend_parity: bool = True


class StateConsumedError(RuntimeError):
    """A move-only state (``capabilities.consumes_state``) was stepped a second time."""


# --------------------------------------------------------------------------- the batch


class Batch(NamedTuple, Generic[ArrayT]):
    """One training batch on the device.

    ``x``, ``y``: inputs and targets; ``index``: positions of the samples in the training set;
    ``noise``: per-step Uniform(0, 1) noise ``(NOISE_ROWS, B, num_outputs)`` from the run's
    seed, for label sampling identical across backends.
    """

    x: ArrayT
    y: ArrayT
    index: ArrayT  # type: ignore[assignment]  # shadows tuple.index on purpose: the field reads best
    noise: ArrayT


# --------------------------------------------------------------------------- the adapter


class Adapter:
    """Base class of every optimizer adapter; see the module docstring for the contract.

    Subclasses set the class attributes and implement :meth:`init`, :meth:`step` and
    :meth:`direction`. Adapters are stateless objects: everything that changes lives in the
    state tuple.
    """

    name: ClassVar[str]
    backend: ClassVar[str]
    paper: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Hyperparams: ClassVar[type]
    search_space: ClassVar[Mapping[str, Distribution]] = {}
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Named hyperparameter sets (e.g. ``paper``, ``kfac-jax``), applied before overrides.
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def init(self, problem: Problem, hparams: Any) -> Any:
        raise NotImplementedError

    def step(self, problem: Problem, params: Any, state: Any, batch: Batch[Any]) -> tuple[Any, Any, dict[str, Any]]:
        raise NotImplementedError

    def direction(self, problem: Problem, params: Any, state: Any, batch: Batch[Any]) -> Any:
        raise NotImplementedError

    def eval_params(self, problem: Problem, params: Any, state: Any) -> Any:
        """The parameters to evaluate at after a step (default: ``params``), called untimed before
        every evaluation, like AlgoPerf's ``prepare_for_eval``: Schedule-Free evaluates its
        averaged iterate ``x`` while it steps from ``y``. Pure: no passes through the oracle, no
        write into ``params`` or ``state``, the same answer when called twice; the run continues
        from ``params``, not from what this returns."""
        return params

    @classmethod
    def resolve(cls, overrides: Mapping[str, Any] | None = None, preset: str | None = None) -> Any:
        """Defaults, then the preset, then ``overrides``; validated."""
        merged: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                raise HyperparameterError(
                    f"{cls.name}: unknown preset {preset!r} (known: {', '.join(cls.presets) or 'none'})"
                )
            merged.update(cls.presets[preset])
        merged.update(overrides or {})
        return resolve_hparams(cls.Hyperparams, merged, owner=cls.name)


class MethodCard(NamedTuple):
    """What the torch and JAX adapters of one method share: identity, hyperparameters, space.

    Built-in methods define one card in ``backends/methods/<name>.py``; both backends' adapters
    take their metadata from it, so defaults and search spaces cannot drift apart.
    """

    name: str
    paper: str
    description: str
    Hyperparams: type
    search_space: Mapping[str, Distribution]
    capabilities: Capabilities = Capabilities()
    presets: Mapping[str, Mapping[str, Any]] = {}
    #: Backends with an adapter of this method (``backends/<backend>/optimizers/<name>.py``);
    #: a declared one that does not resolve is an error, not a silently missing method.
    backends: tuple[str, ...] = BACKENDS


def from_card(card: MethodCard, backend: str) -> dict[str, Any]:
    """Class attributes for an adapter of ``card`` in ``backend`` (use in a class body via
    ``locals().update(...)`` or pass to ``type``); see :func:`adapter_class`."""
    return {
        "name": card.name,
        "backend": backend,
        "paper": card.paper,
        "description": card.description,
        "Hyperparams": card.Hyperparams,
        "search_space": card.search_space,
        "capabilities": card.capabilities,
        "presets": card.presets,
    }


#: Lazily re-exported wrappers: name -> (module, attribute). Imported by name on first use, so the
#: contract module imports no framework, and a torch adapter that imports it never pulls in JAX
#: (nor the reverse): ``backends.torch`` and ``backends.jax`` stay independent.
_LAZY_EXPORTS: dict[str, tuple[str, str]] = {
    "wrap_torch_optimizer": ("backends.torch.wrap", "wrap_torch_optimizer"),
    "torch_part": ("backends.torch.wrap", "part"),
    "LiveOptimizers": ("backends.torch.wrap", "LiveOptimizers"),
    "wrap_optax": ("backends.jax.wrap", "wrap_optax"),
}


def __getattr__(name: str) -> Any:
    """``wrap_torch_optimizer``/``torch_part``/``LiveOptimizers`` (``backends.torch.wrap``) and ``wrap_optax``
    (``backends.jax.wrap``), imported on first use."""
    if name in _LAZY_EXPORTS:
        module, attr = _LAZY_EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def adapter_class(card: MethodCard, backend: str) -> type[Adapter]:
    """A base class carrying ``card``'s metadata for ``backend``; subclass it::

    class IEF(adapter_class(ief.CARD, "torch")):
        def init(...): ...
    """
    return type(f"_{card.name}_{backend}_base", (Adapter,), from_card(card, backend))


# --------------------------------------------------------------------------- the problem


class StepFunction(typing.Protocol):
    """A backend's prepared step: ``adapter.step`` bound to a problem (jitted in JAX)."""

    #: How many times the function has been compiled so far (always 0 where nothing compiles);
    #: the harness books a step during which this grows as compile time.
    compile_count: int

    def __call__(self, params: Any, state: Any, batch: Batch[Any]) -> tuple[Any, Any, dict[str, Any]]: ...


class PassCounters(typing.Protocol):
    """The pass counters of a problem (``forward``, ``backward``, ``jvp``, ``vjp``, ``per_sample``)."""

    def add(self, kind: str, n: int = 1) -> None: ...

    def snapshot(self) -> dict[str, int]: ...


class ReversePass(typing.Protocol):
    """One reverse pass with logit cotangent ``R`` (``B x C``): ``param_grad = sum_n Jz_n^T R_n``
    (flat ``(P,)``; empty where ``param_grad=False`` was asked), ``tap_grads[k]`` the cotangent
    of tapped layer ``k``'s pre-activation (empty without taps)."""

    @property
    def param_grad(self) -> Any: ...

    @property
    def tap_grads(self) -> list[Any]: ...


@typing.runtime_checkable
class Oracle(typing.Protocol):
    """The curvature primitives at ``params`` on ``batch``: all an adapter may call.

    ``problem.oracle(params, batch, taps=...)`` builds one per step; it caches what it has
    computed (the forward, the logit gradients, the gradient), so asking twice costs one pass,
    and it counts every pass in ``problem.counters``. Implementations:
    ``backends.torch.oracle.TorchOracle`` (eager autograd) and ``backends.jax.oracle.JaxOracle``
    (``jax.linearize``; inside a jitted step XLA removes what is not used).

    Conventions (docs/conventions.md): ``B`` samples, ``C`` outputs, ``P`` trainable parameters
    (flat, canonical order, :class:`ParamLayout`); ``z`` the logits ``(B, C)``; per-sample losses
    ``l_n``, the objective is their mean; ``r_n = dl_n/dz_n``; ``Jz`` the output Jacobian
    ``(B, C, P)``; ``J`` the per-sample gradient matrix ``(B, P)`` (rows ``grad l_n``, not divided
    by ``B``); ``Q`` the per-sample output Hessian of the loss; the GGN is
    ``G = (1/B) sum_n Jz_n^T Q_n Jz_n``. Arrays are the backend's (``torch.Tensor``,
    ``jax.Array``) in the problem's working dtype; scalars are 0-d arrays.
    """

    problem: Any
    likelihood: str
    params: Any
    batch: Batch[Any]
    batch_size: int

    @property
    def logits(self) -> Any:
        """``z``, ``(B, C)`` (one forward, counted once)."""
        ...

    def per_sample_losses(self) -> Any:
        """``l_n``, ``(B,)``."""
        ...

    def loss(self) -> Any:
        """Mean batch loss (0-d) from the forward that also serves the reverse passes."""
        ...

    def loss_value(self) -> Any:
        """Mean batch loss where no reverse pass will follow (a trial point of a line search or
        an LM ratio): one forward without recording a graph (torch); in JAX the same forward
        without linearising. Reuses a forward that already ran."""
        ...

    def logit_grads(self) -> Any:
        """``r``, ``(B, C)``; closed form, no pass."""
        ...

    def reverse(self, cotangent: Any, *, kind: str = "backward", param_grad: bool = True) -> ReversePass:
        """One reverse pass of ``sum_n R_n^T z_n`` (counted as ``kind``). ``param_grad=False``
        asks for the tap cotangents only (needs ``taps=True``; torch skips the parameter
        products, JAX leaves them to XLA's dead-code removal)."""
        ...

    def grad(self) -> Any:
        """Gradient of the mean batch loss, flat ``(P,)`` (one reverse pass, cached)."""
        ...

    def loss_and_grad(self) -> tuple[Any, Any]: ...

    def weighted_grad(self, weights: Any) -> Any:
        """``J^T w = sum_n w_n grad l_n``, flat ``(P,)`` (one reverse pass)."""
        ...

    def tap_inputs(self) -> list[Any]:
        """Inputs ``a`` of the trainable tapped layers, ``ParamLayout.tapped`` order, each in the
        layer's own layout (``(B, d_in)``, ``(B, T, d_in)``, NCHW for Conv2d); needs ``taps=True``."""
        ...

    def tap_grads(self) -> list[Any]:
        """Pre-activation gradients ``e = dl_n/ds`` of the per-sample losses (true labels), shaped
        as the layer's output; the reverse pass of :meth:`grad` (shared with it)."""
        ...

    def tap_grads_for(self, cotangent: Any, *, kind: str = "backward") -> list[Any]:
        """Pre-activation cotangents for a logit cotangent ``(B, C)`` (e.g. sampled labels); one
        reverse pass without the parameter gradient."""
        ...

    def per_sample_grads(self) -> Any:
        """``J``, ``(B, P)`` (one vectorised per-sample pass)."""
        ...

    def jvp(self, v: Any) -> Any:
        """``Jz v``: output tangents ``(B, C)`` for a flat parameter tangent ``v`` (forward mode)."""
        ...

    def vjp(self, u: Any) -> Any:
        """``sum_n Jz_n^T u_n`` for output cotangents ``u`` ``(B, C)``: flat ``(P,)``."""
        ...

    def output_hessian_apply(self, u: Any) -> Any:
        """``Q_n u_n`` for every sample, ``(B, C)``; closed form, no pass."""
        ...

    def ggn_vp(self, v: Any) -> Any:
        """``G v`` (one JVP and one VJP)."""
        ...

    def ggn_quad(self, v: Any) -> Any:
        """``v^T G v`` (0-d, one JVP)."""
        ...

    def output_jacobian(self) -> Any:
        """Dense ``Jz``, ``(B, C, P)`` (small problems only: references and EGN)."""
        ...

    def sample_targets(self, k: int = 1) -> Any:
        """``k`` targets per sample drawn from the model with the batch noise, ``(k, B, ...)``."""
        ...

    def sampled_logit_grads(self, k: int = 1) -> Any:
        """``dl(y^_n, z_n)/dz_n`` for ``k`` sampled targets, ``(k, B, C)``."""
        ...

    def logit_grads_with_samples(self, k: int = 1) -> Any:
        """``[r; r^]``, ``(1 + k, B, C)``: the true labels' logit gradients, then ``k`` sampled draws'."""
        ...


#: The JAX model hook's per-layer callback: ``at_tap(k, s, a) -> s'`` for tapped layer ``k``
#: (``ParamLayout.tapped`` order), its pre-activation ``s`` and input ``a``; see :meth:`Problem.apply`.
TapHook = typing.Callable[[int, Any, Any], Any]


class Problem(typing.Protocol):
    """What the harness and adapters may rely on in a backend's built suite.

    Both ``backends.torch.TorchProblem`` and the JAX problem implement it; adapters use
    ``oracle``, ``layout``, ``num_params``, ``batch_size``, ``likelihood``, ``n_train``,
    ``dtype`` and ``device``; the harness uses the rest.

    **The model hook** (for libraries that must see the model, not the oracle: kfac-jax traces a
    loss function, SINGD hooks ``nn.Module`` layers): :meth:`apply` is the model's pure forward
    from the flat vector, with ``likelihood`` naming the loss on its outputs. Passes through it
    are not counted; an adapter that uses it counts its passes with ``counters.add`` (or its card
    says what is not counted). The torch problem also offers ``model`` / ``module_from_flat(flat)``:
    an ``nn.Module`` whose trainable parameters, in ``named_parameters()`` order, are the flat
    vector's blocks.
    """

    backend: str
    suite: Any
    seed: int
    dtype_name: str
    likelihood: str
    batch_size: int
    num_outputs: int
    n_train: int
    num_params: int
    step_budget: int
    #: The working dtype and device (``torch.dtype``/``torch.device``; ``jnp.dtype``, a device name).
    dtype: Any
    device: Any
    layout: ParamLayout
    counters: PassCounters

    @property
    def params0(self) -> Any: ...

    def batch(self, step: int) -> tuple[Any, Any, Any]: ...

    def device_batch(self, step: int) -> Batch[Any]: ...

    def apply(self, params: Any, x: Any, *, at_tap: TapHook | None = None) -> Any:
        """Logits ``z`` of inputs ``x`` at the flat ``params``; pure, uncounted. JAX only: with
        ``at_tap`` each trainable tapped layer's pre-activation ``s`` is replaced by
        ``at_tap(k, s, a)`` (a library inserts its layer markers there)."""
        ...

    def oracle(self, params: Any, batch: Batch[Any], *, taps: bool = False) -> Oracle:
        """The :class:`Oracle` at ``params`` on ``batch``; ``taps=True`` records the tapped
        layers' inputs and pre-activation cotangents (:meth:`Oracle.tap_inputs`)."""
        ...

    def evaluate(self, params: Any) -> dict[str, float]: ...

    def make_step(self, adapter: Adapter) -> StepFunction: ...

    def make_direction(self, adapter: Adapter) -> Any:
        """``(params, state, batch) -> direction`` bound to this problem (jitted where it helps)."""
        ...

    def block(self, *trees: Any) -> None: ...

    def peak_memory(self) -> tuple[int | None, str]: ...

    def reset_peak_memory(self) -> None: ...

    def to_numpy(self, value: Any) -> Any: ...

    def from_numpy(self, array: Any) -> Any: ...
