"""The conformance battery: what every optimizer adapter must pass before it is benchmarked.

``ngbench check-adapter NAME|module:Class`` and :func:`check_adapter` run the named checks of
:data:`CHECKS` on one adapter class, in float64 on the tiny suites (``tiny-ce``, ``tiny-mse``)
and on two convex problems built here (multinomial logistic regression on the wine data,
linear least squares on the diabetes data; never registered in the suite catalogue). Each
check reports ``pass``, ``fail`` or ``skip`` with a one-line reason; an exception raised by
adapter code fails the check that called it, with the exception and the adapter's line in the
reason and the traceback in :attr:`CheckResult.detail`. The whole battery takes a few
seconds for one adapter on CPU.

The checks, in order (the contract they enforce is ``backends.spec``):

``adapter``               a subclass of ``backends.spec.Adapter``: a lowercase name not taken by a
                          built-in, the requested backend, paper and description, and its own
                          ``init``/``step``/``direction`` with the contract's signatures;
``hyperparams``           ``Hyperparams`` is a frozen dataclass; every field has a typed default,
                          a ``doc`` and an admissible range (numbers: ``low``/``high``; strings:
                          ``choices`` or ``Literal``); defaults and presets resolve;
``search_space``          names known hyperparameters with valid distributions whose samples
                          resolve; not empty when there are numeric hyperparameters;
``capabilities``          a ``Capabilities`` with known likelihoods;
``invalid_hparams``       out-of-range, ill-typed and unknown values are refused with a
                          ``HyperparameterError`` naming the hyperparameter;
``init``                  the state is a ``NamedTuple`` whose first field is the hyperparameters;
``step_outputs``          ``step`` returns ``(params, state, stats)``: flat parameters of the
                          input's shape, dtype and device, finite; the state's type; ``stats`` with
                          scalar values under identifier names and ``loss`` equal to the mean batch
                          loss at the incoming parameters;
``direction_outputs``     ``direction`` is flat, of the parameters' dtype, finite, not zero, and
                          repeatable (it does not advance the state); eager equals jitted (JAX);
``float32``               float32 parameters, directions and floating state arrays stay float32
                          (0-d control scalars such as an adaptive damping may be float64);
``no_mutation``           ``step`` and ``direction`` write neither into the parameters, the batch
                          nor the state they are given;
``deterministic``         two runs from the same seed with one adapter instance give identical
                          parameters; a difference is diagnosed as state on ``self`` when a new
                          instance repeats the first run, else as randomness;
``state_roundtrip``       a state pickled (and ``torch.save``-d) and loaded continues exactly as
                          the original, in another adapter instance (PyTorch);
``lowers_loss``           default hyperparameters lower the training loss of both convex
                          problems by at least :data:`MIN_CONVEX_DECREASE`;
``direction_consistent``  with ``capabilities.step_along_direction``, the first update from a
                          fresh state is ``-stats["lr"] * direction`` (rtol :data:`CONSISTENCY_RTOL`);
                          skipped when the adapter declares otherwise;
``suite_blind``           renaming the first tiny suite (name, version, description, paper,
                          target) changes nothing: adapters must not pick hyperparameters from it;
``hidden_work``           ``init`` runs no forward/backward/JVP/VJP pass and no Python thread is
                          left running: per-step work happens inside ``step``, under the timer;
``parity``                where the method exists in both backends: direction and first update
                          agree in float64 to rtol :data:`PARITY_RTOL` (as ``tests/test_parity.py``).

Modules: :mod:`~harness.conformance.base` (results, thresholds, helpers),
:mod:`~harness.conformance.context` (the shared :class:`Context` and the convex problems),
:mod:`~harness.conformance.declarations`, :mod:`~harness.conformance.outputs` and
:mod:`~harness.conformance.behaviour` (the checks, by concern) and
:mod:`~harness.conformance.battery` (:data:`CHECKS` in order and the entry points).

What the battery cannot see (reading a suite's data to pick hyperparameters, work hidden in
another process, custom kernels) is forbidden by ``CONTRIBUTING.md`` and left to review.
"""

from harness.conformance.base import (
    CHECK_TIMEOUT_S,
    CONSISTENCY_RTOL,
    CONVEX_STEPS,
    LOSS_RTOL,
    MIN_CONVEX_DECREASE,
    NAME_PATTERN,
    PARITY_RTOL,
    STAT_PATTERN,
    STRUCTURE_STEPS,
    TINY_SUITES,
    CheckFailure,
    CheckResult,
    CheckSkipped,
    Report,
    Status,
)
from harness.conformance.battery import (
    CHECK_NAMES,
    CHECKS,
    assert_conforms,
    backends_of,
    builtin_cases,
    check_adapter,
    resolve_target,
)
from harness.conformance.context import Check, Context, convex_loss, convex_suite

__all__ = [
    "CHECKS",
    "CHECK_NAMES",
    "CHECK_TIMEOUT_S",
    "CONSISTENCY_RTOL",
    "CONVEX_STEPS",
    "LOSS_RTOL",
    "MIN_CONVEX_DECREASE",
    "NAME_PATTERN",
    "PARITY_RTOL",
    "STAT_PATTERN",
    "STRUCTURE_STEPS",
    "TINY_SUITES",
    "Check",
    "CheckFailure",
    "CheckResult",
    "CheckSkipped",
    "Context",
    "Report",
    "Status",
    "assert_conforms",
    "backends_of",
    "builtin_cases",
    "check_adapter",
    "convex_loss",
    "convex_suite",
    "resolve_target",
]
