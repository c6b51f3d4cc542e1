"""Sweep files: parse, validate and expand a TOML sweep into an ordered list of run specs.

A sweep is the Cartesian product suites × backends × optimizers × hyperparameter grid × seeds
(in that nesting order, each list in file order, so the expansion is stable). The minimal
form::

    name = "nightly-cpu"
    suites = ["digits-mlp"]
    optimizers = ["sgd", "adamw", "ief"]
    backends = ["torch"]
    seeds = [0, 1]
    steps = 120            # optional override of every suite's step budget
    [hparams.ief]          # optional per-optimizer overrides
    damping = 1e-7

Everything is validated before anything runs, and every problem found is reported in one
:class:`~harness.errors.ConfigError`: malformed TOML (with line and column), unknown keys
(with close-match suggestions), wrong types, empty lists, duplicates, unknown suites,
optimizers, backends or presets, and hyperparameters the adapter rejects
(``Adapter.resolve``). Combinations an adapter cannot run (a likelihood it does not support,
a backend it has no adapter for) are skipped with a note, not an error, unless nothing is
left to run.

A hyperparameter given as a list is a grid axis (``lr = [0.1, 0.01]`` gives two runs per
seed); several lists multiply.

The tuned track (:mod:`harness.tuning`): ``trials = N`` turns a sweep into one tuning study
per (suite, optimizer, backend): ``N`` quasi-random configurations from each adapter's search
space, run on ``trial_seed``, then the best one re-run on ``rerun_seeds``::

    name = "tuned-cpu"
    suites = ["digits-mlp"]
    optimizers = ["sgd", "adamqlr"]
    track = "tuned"          # implied by trials
    trials = 8               # per optimizer and suite, the same for all
    rerun_seeds = 3          # K -> seeds 0..K-1, or a list
    trial_seed = 1000        # the seed every trial runs on (not a re-run seed)
    sampler = "halton"       # or "sobol"
    study_seed = 0           # scrambling seed of the sampler
    [hparams.sgd]            # scalars fix a hyperparameter (it leaves the search)
    nesterov = false
    [search.sgd]             # override or add search dimensions (recorded in the sweep)
    lr = { log_uniform = [1e-3, 1.0] }

A tuned sweep has no ``seeds`` and no grid axes (the search replaces both). ``track =
"tuned"`` without ``trials`` is a plain grid whose runs are labelled tuned (role ``run``):
shown, but not ranked, since only the protocol's re-runs are.

Modules: :mod:`~harness.sweep.schema` (the validated file and its plan),
:mod:`~harness.sweep.protocol` (the tuned track's keys: protocol and distributions),
:mod:`~harness.sweep.parsing` (:func:`load_config`) and :mod:`~harness.sweep.expansion`
(adapters described, the untuned runs). :func:`harness.plans.expand` expands either track and
:func:`harness.plans.load` reads and expands a file.
"""

from harness.sweep.expansion import (
    ResolvedSweep,
    expand_untuned,
    expected_key,
    grid,
    resolve,
    run_template,
    sample_value,
)
from harness.sweep.parsing import Problems, load_config, parse_devices, parse_toml
from harness.sweep.protocol import Protocol
from harness.sweep.schema import (
    BUDGET_KEYS,
    DEFAULT_TIMEOUT_S,
    DTYPES,
    KEYS,
    PLAIN_RUN,
    TRACKS,
    TUNING_KEYS,
    RunRole,
    SweepConfig,
    SweepPlan,
)

__all__ = [
    "BUDGET_KEYS",
    "DEFAULT_TIMEOUT_S",
    "DTYPES",
    "KEYS",
    "PLAIN_RUN",
    "TRACKS",
    "TUNING_KEYS",
    "Problems",
    "Protocol",
    "ResolvedSweep",
    "RunRole",
    "SweepConfig",
    "SweepPlan",
    "expand_untuned",
    "expected_key",
    "grid",
    "load_config",
    "parse_devices",
    "parse_toml",
    "resolve",
    "run_template",
    "sample_value",
]
