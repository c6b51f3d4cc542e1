"""The tuned track: quasi-random search over an adapter's declared space, then re-runs.

Two ranking tracks, chosen per sweep (``track`` in the sweep file) and ranked apart on the site:

* **untuned**: every adapter at its published defaults (or a named preset), no search: the
  spirit of AlgoPerf's self-tuning ruleset (docs/tuning.md);
* **tuned**: a *study* per (suite, optimizer, backend), AlgoPerf's external-tuning ruleset in
  miniature with DeepOBS/Crowded-Valley re-runs (§1.1, §1.2, §1.3):

  1. ``trials`` configurations (default 8) drawn quasi-randomly from the adapter's
     ``search_space``: a scrambled Halton (AlgoPerf's ``halton.py``) or Sobol sequence
     (``scipy.stats.qmc``) in the unit cube, one dimension per searched hyperparameter (sorted
     by name), mapped through :func:`backends.spec.sample_distribution`. Its scrambling seed is
     derived from (suite, optimizer, ``study_seed``), so a study is reproducible and studies are
     independent; the backend is not part of it, so the torch and JAX studies of one suite try
     the same configurations. A trial's configuration is the adapter's defaults, then the
     sweep's preset and fixed overrides, then the sampled values.
  2. Every trial runs once, on ``trial_seed`` (default 1000: common random numbers across
     trials, and a seed that is never scored), through the ordinary sweep machinery (fresh
     worker processes, exactly-once storage, resume); its run is stored with role ``trial``,
     its trial index and ``config_hash`` (a hash of the resolved hyperparameters).
  3. Selection (:func:`leaderboard.scoring.choose_trial`): trials that reached the suite's
     target by time-to-target, then the others by their best validation metric in the
     suite's direction (``harness.runner.metric_mode``); failed trials (diverged, out of memory,
     timed out, raised, crashed) rank last whatever they reached before failing; ties go to
     the lower trial index.
  4. The chosen configuration is re-run on ``rerun_seeds`` (default 0, 1, 2: the seeds the
     untuned track uses, so the two tracks compare seed by seed), stored with role ``rerun``,
     the chosen trial's index and its ``config_hash``. The tuned board scores only these: per
     suite, the median over the re-run seeds of time-to-target (misses are ``inf``).
  5. When every trial failed, the study has **no chosen configuration**: nothing is re-run
     (re-running the defaults would smuggle the untuned track into the tuned one) and the
     study scores ``inf`` on that suite, shown as such on the site.

The budget is the same for every optimizer: the same number of trials and re-run seeds per
suite, the suites' own step/time budgets; the protocol (trials, seeds, sampler, seeds, scipy
version, any search-space override) is recorded in the sweep row's ``spec``.

Resuming (``--resume``, or running the same command again) redoes only what is missing: a trial
or re-run whose key already finished is not run again, selection reads the stored trial
results, so it makes the same choice; trials stored as ``error``/``crashed`` are retried like
any sweep run, and if a retry now succeeds the choice can change (the earlier failure was the
machine's, not the configuration's).

Modules: :mod:`~harness.tuning.sampling` (quasi-random points), :mod:`~harness.tuning.studies`
(studies and their trials), :mod:`~harness.tuning.expansion` (a tuned sweep's trials),
:mod:`~harness.tuning.selection` (the choice per study) and :mod:`~harness.tuning.execution`
(both phases in one sweep row). The protocol and the distributions' sweep-file spelling are
part of the sweep file (:mod:`harness.sweep.protocol`) and re-exported here.
"""

from harness.sweep.protocol import (
    DEFAULT_RERUN_SEEDS,
    DEFAULT_SAMPLER,
    DEFAULT_TRIAL_SEED,
    DEFAULT_TRIALS,
    ROLE_RERUN,
    ROLE_RUN,
    ROLE_TRIAL,
    SAMPLERS,
    TOML_DISTRIBUTIONS,
    Protocol,
    distribution_from_toml,
    distribution_problem,
    distribution_to_dict,
)
from harness.tuning.execution import TuneSummary, rerun_plan, run_tuned
from harness.tuning.expansion import expand_tuned
from harness.tuning.sampling import config_hash, derived_seed, sample_configs, unit_samples
from harness.tuning.selection import Selection, select, stored_rows, trial_result
from harness.tuning.studies import (
    Study,
    Trial,
    adapter_space,
    distribution_from_description,
    effective_space,
    plan_study,
    study_points,
)

__all__ = [
    "DEFAULT_RERUN_SEEDS",
    "DEFAULT_SAMPLER",
    "DEFAULT_TRIALS",
    "DEFAULT_TRIAL_SEED",
    "ROLE_RERUN",
    "ROLE_RUN",
    "ROLE_TRIAL",
    "SAMPLERS",
    "TOML_DISTRIBUTIONS",
    "Protocol",
    "Selection",
    "Study",
    "Trial",
    "TuneSummary",
    "adapter_space",
    "config_hash",
    "derived_seed",
    "distribution_from_description",
    "distribution_from_toml",
    "distribution_problem",
    "distribution_to_dict",
    "effective_space",
    "expand_tuned",
    "plan_study",
    "rerun_plan",
    "run_tuned",
    "sample_configs",
    "select",
    "stored_rows",
    "study_points",
    "trial_result",
    "unit_samples",
]
