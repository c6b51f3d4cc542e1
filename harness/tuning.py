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
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.spec import Choice, Distribution, LogUniform, OneMinusLogUniform, Uniform, sample_distribution
from leaderboard.scoring import TrialResult, choose_trial, rank_trials

SAMPLERS: tuple[str, ...] = ("halton", "sobol")
DEFAULT_TRIALS = 8
DEFAULT_RERUN_SEEDS: tuple[int, ...] = (0, 1, 2)
#: Seed of every trial run: not a scoring seed, so the re-runs never see the seed they were
#: selected on (no winner's curse in the reported numbers).
DEFAULT_TRIAL_SEED = 1000
DEFAULT_SAMPLER = "halton"

ROLE_RUN, ROLE_TRIAL, ROLE_RERUN = "run", "trial", "rerun"


# --------------------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class Protocol:
    """The tuning protocol of a tuned sweep (the same for every study in it)."""

    trials: int = DEFAULT_TRIALS
    rerun_seeds: tuple[int, ...] = DEFAULT_RERUN_SEEDS
    trial_seed: int = DEFAULT_TRIAL_SEED
    sampler: str = DEFAULT_SAMPLER
    study_seed: int = 0

    def problems(self) -> list[str]:
        """Everything wrong with the protocol, as sweep-file messages."""
        out = []
        if self.trials < 1:
            out.append(f"trials must be a positive integer, got {self.trials!r}")
        if not self.rerun_seeds:
            out.append("rerun_seeds is empty: the chosen configuration would never be scored")
        if any(s < 0 for s in self.rerun_seeds):
            out.append(f"rerun_seeds must be non-negative, got {list(self.rerun_seeds)!r}")
        if len(set(self.rerun_seeds)) != len(self.rerun_seeds):
            out.append(f"rerun_seeds lists a seed more than once: {list(self.rerun_seeds)!r}")
        if self.trial_seed < 0:
            out.append(f"trial_seed must be non-negative, got {self.trial_seed!r}")
        if self.trial_seed in self.rerun_seeds:
            out.append(
                f"trial_seed {self.trial_seed} is also a re-run seed: the re-runs must be fresh seeds, "
                "not the one the configuration was selected on"
            )
        if self.sampler not in SAMPLERS:
            out.append(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.study_seed < 0:
            out.append(f"study_seed must be non-negative, got {self.study_seed!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        import scipy

        return {
            "trials": self.trials,
            "rerun_seeds": list(self.rerun_seeds),
            "trial_seed": self.trial_seed,
            "sampler": f"scrambled {self.sampler} (scipy.stats.qmc {scipy.__version__})",
            "sampler_name": self.sampler,
            "study_seed": self.study_seed,
            "selection": "reached target: fastest time-to-target; else best validation metric; failed trials last",
        }


# --------------------------------------------------------------------------- distributions

#: Sweep-file spelling of each distribution: ``lr = { log_uniform = [1e-4, 1.0] }``.
TOML_DISTRIBUTIONS: dict[str, type] = {
    "log_uniform": LogUniform,
    "uniform": Uniform,
    "one_minus_log_uniform": OneMinusLogUniform,
    "choice": Choice,
}


def distribution_problem(dist: Distribution) -> str | None:
    """Why ``dist`` cannot be sampled (``None`` if it can)."""
    if isinstance(dist, Choice):
        return None if dist.values else "a choice needs at least one value"
    low, high = dist.low, dist.high
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        return f"bounds must be numbers, got [{low!r}, {high!r}]"
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        return f"need finite low < high, got [{low!r}, {high!r}]"
    if isinstance(dist, (LogUniform, OneMinusLogUniform)) and low <= 0:
        return f"a log-uniform range needs low > 0, got [{low!r}, {high!r}]"
    return None


def distribution_from_toml(value: Any) -> Distribution:
    """``{log_uniform = [lo, hi]}``, ``{uniform = ...}``, ``{one_minus_log_uniform = ...}`` or
    ``{choice = [v, ...]}`` from a sweep file; raises ``ValueError`` with the reason."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"must be a one-entry table {{ {' | '.join(TOML_DISTRIBUTIONS)} = [...] }}, got {value!r}")
    ((kind, args),) = value.items()
    if kind not in TOML_DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {kind!r} (known: {', '.join(TOML_DISTRIBUTIONS)})")
    if not isinstance(args, list):
        raise ValueError(f"{kind} takes a list, got {args!r}")
    if kind == "choice":
        dist: Distribution = Choice(tuple(args))
    else:
        if len(args) != 2:
            raise ValueError(f"{kind} takes [low, high], got {args!r}")
        dist = TOML_DISTRIBUTIONS[kind](*args)
    problem = distribution_problem(dist)
    if problem:
        raise ValueError(f"{kind}: {problem}")
    return dist


def distribution_to_dict(dist: Distribution) -> dict[str, Any]:
    """The sweep-file spelling (recorded in the sweep's spec)."""
    for name, kind in TOML_DISTRIBUTIONS.items():
        if type(dist) is kind:
            return {name: list(dist.values) if isinstance(dist, Choice) else [dist.low, dist.high]}
    raise TypeError(f"unknown distribution {dist!r}")


_RANGE = re.compile(r"^(?P<kind>log-uniform|uniform|1 − log-uniform) \[(?P<low>[^,]+), (?P<high>[^\]]+)\]$")


def distribution_from_description(text: str) -> Distribution:
    """Invert :func:`harness.external.describe_distribution` (how a worker describes a third-party
    adapter's space to this process). Bounds were printed with ``%g`` (six significant digits)."""
    m = _RANGE.match(text.strip())
    if m:
        kinds: dict[str, type[LogUniform | Uniform | OneMinusLogUniform]] = {
            "log-uniform": LogUniform,
            "uniform": Uniform,
            "1 − log-uniform": OneMinusLogUniform,
        }
        return kinds[m["kind"]](float(m["low"]), float(m["high"]))
    if text.startswith("one of "):
        values = ast.literal_eval("(" + text[len("one of ") :] + ",)")
        return Choice(tuple(values))
    raise ValueError(f"cannot read the search-space entry {text!r}")


# --------------------------------------------------------------------------- the sampler


def derived_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (stable across processes and Python versions)."""
    text = "|".join(str(p) for p in ("ngbench-study", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def unit_samples(n: int, d: int, *, sampler: str = DEFAULT_SAMPLER, seed: int = 0) -> np.ndarray:
    """``n`` points of a scrambled Halton or Sobol sequence in ``[0, 1)^d`` (shape ``(n, d)``).

    Sobol's balance properties hold for powers of two (scipy warns otherwise; the warning is
    silenced here because the trial count is the user's choice, and documented instead).
    """
    if n < 1:
        raise ValueError(f"need at least one sample, got {n}")
    if d == 0:
        return np.zeros((n, 0))
    rng = np.random.default_rng(seed)
    if sampler == "halton":
        from scipy.stats import qmc

        return np.asarray(qmc.Halton(d, scramble=True, rng=rng).random(n))
    if sampler == "sobol":
        from scipy.stats import qmc

        engine = qmc.Sobol(d, scramble=True, rng=rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(engine.random(n))
    raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")


def sample_configs(
    space: Mapping[str, Distribution], n: int, *, sampler: str = DEFAULT_SAMPLER, seed: int = 0
) -> list[dict[str, Any]]:
    """``n`` quasi-random points of ``space`` (dimensions in name order, so the order in which a
    card lists its space does not change the points)."""
    names = sorted(space)
    u = unit_samples(n, len(names), sampler=sampler, seed=seed)
    return [{name: sample_distribution(space[name], float(u[i, j])) for j, name in enumerate(names)} for i in range(n)]


def config_hash(hparams: Mapping[str, Any]) -> str:
    """Hash of a resolved configuration: equal hyperparameters, equal hash."""
    text = json.dumps(dict(hparams), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- studies


@dataclass(frozen=True)
class Trial:
    """One trial of a study: its index, the overrides it runs with, its resolved configuration."""

    index: int
    point: dict[str, Any]
    resolved: dict[str, Any]
    config_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.index, "point": dict(self.point), "config_hash": self.config_hash}


@dataclass(frozen=True)
class Study:
    """The tuning of one optimizer on one suite and backend."""

    suite: str
    optimizer: str
    backend: str
    protocol: Protocol
    space: dict[str, Distribution]
    fixed: dict[str, Any]
    preset: str | None
    trials: tuple[Trial, ...]
    #: Template of every run of the study (budgets, dtype, tag ...); seed and hparams vary.
    template: Any
    #: Why the study has fewer trials than the protocol asks (an empty search space).
    note: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.suite, self.optimizer, self.backend)

    @property
    def label(self) -> str:
        return f"{self.suite} / {self.optimizer} ({self.backend})"

    def trial_spec(self, trial: Trial) -> Any:
        return dataclasses.replace(self.template, seed=self.protocol.trial_seed, hparams=dict(trial.point))

    def rerun_specs(self, trial: Trial) -> list[Any]:
        point = dict(trial.point)
        return [dataclasses.replace(self.template, seed=s, hparams=point) for s in self.protocol.rerun_seeds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "optimizer": self.optimizer,
            "backend": self.backend,
            "space": {k: distribution_to_dict(v) for k, v in sorted(self.space.items())},
            "fixed": dict(self.fixed),
            "preset": self.preset,
            "trials": [t.to_dict() for t in self.trials],
            "note": self.note,
        }


def adapter_space(optimizer: str, backend: str, info: Any) -> dict[str, Distribution]:
    """The adapter's declared search space: the class's own objects for ngbench's adapters, the
    worker's description read back for third-party ones (``harness.external``)."""
    from harness import external

    if external.is_builtin(optimizer, backend):
        from harness.registry import get_adapter

        return dict(get_adapter(optimizer, backend).search_space)
    return {name: distribution_from_description(text) for name, text in info.search_space.items()}


def effective_space(
    declared: Mapping[str, Distribution], fixed: Mapping[str, Any], overrides: Mapping[str, Distribution]
) -> dict[str, Distribution]:
    """The declared space with the sweep's overrides applied and its fixed hyperparameters removed."""
    space = {**dict(declared), **dict(overrides)}
    return {k: v for k, v in space.items() if k not in fixed}


def study_points(
    suite: str, optimizer: str, space: Mapping[str, Distribution], fixed: Mapping[str, Any], protocol: Protocol
) -> list[dict[str, Any]]:
    """The overrides of each trial of a study: the fixed ones, then the sampled values. An empty
    space gives a single trial (its defaults): more would repeat the same configuration."""
    n = protocol.trials if space else 1
    seed = derived_seed(suite, optimizer, protocol.study_seed)
    return [{**dict(fixed), **p} for p in sample_configs(space, n, sampler=protocol.sampler, seed=seed)]


def plan_study(
    suite: str,
    optimizer: str,
    backend: str,
    *,
    protocol: Protocol,
    space: Mapping[str, Distribution],
    fixed: Mapping[str, Any],
    preset: str | None,
    template: Any,
    resolve: Callable[[Mapping[str, Any], str | None], dict[str, Any]],
) -> Study:
    """The study's trials (:func:`study_points`); ``resolve(point, preset)`` validates a point
    (raising the adapter's ``HyperparameterError``) and returns its resolved hyperparameters."""
    note = "" if space else "no search space: one trial with the defaults"
    trials = []
    for i, point in enumerate(study_points(suite, optimizer, space, fixed, protocol)):
        resolved = resolve(point, preset)
        trials.append(Trial(index=i, point=point, resolved=resolved, config_hash=config_hash(resolved)))
    return Study(
        suite=suite,
        optimizer=optimizer,
        backend=backend,
        protocol=protocol,
        space=dict(space),
        fixed=dict(fixed),
        preset=preset,
        trials=tuple(trials),
        template=template,
        note=note,
    )


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selection:
    """The outcome of a study's trials: the ranking and the chosen trial (or why there is none)."""

    study: Study
    ranking: tuple[TrialResult, ...]
    chosen: Trial | None
    #: Trials with no finished result yet (the study cannot be decided).
    missing: tuple[int, ...] = ()

    @property
    def decided(self) -> bool:
        return not self.missing

    @property
    def reason(self) -> str:
        if self.missing:
            return f"trials {', '.join(map(str, self.missing))} have no result yet"
        if self.chosen is None:
            return f"all {len(self.ranking)} trials failed: no configuration, the study scores inf"
        return f"trial {self.chosen.index} chosen"

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.study.suite,
            "optimizer": self.study.optimizer,
            "backend": self.study.backend,
            "chosen_trial": self.chosen.index if self.chosen else None,
            "config_hash": self.chosen.config_hash if self.chosen else None,
            "reason": self.reason,
        }


def trial_result(trial: Trial, row: Mapping[str, Any] | None) -> TrialResult | None:
    """A stored run's figures as a :class:`TrialResult` (``None``: no usable result)."""
    if row is None or row.get("status") in (None, "interrupted"):
        return None
    return TrialResult(
        trial=trial.index,
        status=str(row["status"]),
        time_to_target_s=_finite(row.get("time_to_target_s")),
        steps_to_target=_finite(row.get("steps_to_target")),
        best_val_metric=_finite(row.get("best_val_metric")),
        config=trial.config_hash,
    )


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def select(study: Study, rows: Mapping[int, Mapping[str, Any] | None], mode: str) -> Selection:
    """Rank the study's trials from their stored runs (``rows``: trial index -> run row) and
    choose (:func:`leaderboard.scoring.choose_trial`)."""
    results, missing = [], []
    for trial in study.trials:
        r = trial_result(trial, rows.get(trial.index))
        if r is None:
            missing.append(trial.index)
        else:
            results.append(r)
    ranking = tuple(rank_trials(results, mode))
    if missing:
        return Selection(study, ranking, None, tuple(missing))
    best = choose_trial(results, mode)
    chosen = next(t for t in study.trials if t.index == best.trial) if best is not None else None
    return Selection(study, ranking, chosen)


def stored_rows(store: Any, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The run that stands for each key: the newest finished run, else the newest failed
    attempt (``error``/``crashed``); interrupted attempts do not count."""
    from sqlalchemy import select as sql_select

    from db.models import Run
    from db.statuses import FINISHED_STATUSES

    wanted = sorted(set(k for k in keys if k))
    best: dict[str, dict[str, Any]] = {}
    cols = (Run.id, Run.key, Run.status, Run.time_to_target_s, Run.steps_to_target, Run.best_val_metric)
    with store.session() as s:
        for i in range(0, len(wanted), 500):
            q = sql_select(*cols).where(Run.key.in_(wanted[i : i + 500])).order_by(Run.id)
            for rid, key, status, ttt, stt, best_val in s.execute(q):
                row = {
                    "id": rid,
                    "status": status,
                    "time_to_target_s": ttt,
                    "steps_to_target": stt,
                    "best_val_metric": best_val,
                }
                if status == "interrupted":
                    continue
                current = best.get(key)
                if current is None or status in FINISHED_STATUSES or current["status"] not in FINISHED_STATUSES:
                    best[key] = row
    return best


# --------------------------------------------------------------------------- running a tuned sweep


@dataclass
class TuneSummary:
    """What a tuned sweep did: the two phases and each study's selection."""

    trials: Any
    reruns: Any = None
    selections: list[Selection] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return bool(self.trials.interrupted or (self.reruns is not None and self.reruns.interrupted))

    @property
    def sweep_id(self) -> int:
        return int(self.trials.sweep_id)


def rerun_plan(plan: Any, selections: Sequence[Selection]) -> Any:
    """The second phase: the chosen configuration of every decided study on the re-run seeds."""
    from harness.sweep import RunRole, SweepPlan

    specs, roles = [], []
    for sel in selections:
        if sel.chosen is None:
            continue
        for spec in sel.study.rerun_specs(sel.chosen):
            specs.append(spec)
            roles.append(RunRole(ROLE_RERUN, sel.chosen.index, sel.chosen.config_hash))
    return SweepPlan(
        config=plan.config,
        specs=tuple(specs),
        skipped=plan.skipped,
        source=plan.source,
        adapters=plan.adapters,
        roles=tuple(roles),
        studies=plan.studies,
    )


def run_tuned(
    plan: Any,
    store: Any,
    executor: Any,
    *,
    kind: str = "sweep",
    resume: bool = False,
    progress: Callable[[str], Any] | None = None,
    on_selection: Callable[[Selection], None] | None = None,
) -> TuneSummary:
    """Run a tuned plan (``harness.sweep.expand`` of a sweep with ``trials``): the trials, the
    selection per study, the re-runs, in one sweep row (see the module docstring).

    ``progress(phase)`` makes a fresh :class:`harness.progress.SweepProgress` per phase.
    """
    from harness.orchestrator import run_sweep
    from harness.runner import metric_mode
    from suites import get_suite

    try:
        first = run_sweep(
            plan,
            store,
            executor,
            kind=kind,
            resume=resume,
            progress=progress("trials") if progress else None,
            close_executor=False,
            finish=False,
        )
        summary = TuneSummary(trials=first)
        if first.interrupted:
            return summary
        keys_by_trial: dict[tuple[tuple[str, str, str], int], str] = {}
        for index, key in first.keys.items():
            role = plan.role_of(index)
            spec = plan.specs[index]
            keys_by_trial[((spec.suite, spec.optimizer, spec.backend), int(role.trial))] = key
        rows = stored_rows(store, list(keys_by_trial.values()))
        # This invocation's outcomes stand in for rows stored under another key (a worker whose
        # key differed from the expected one) or not stored (a concurrent duplicate).
        for outcome in first.outcomes:
            role = plan.role_of(outcome.job.index)
            spec = outcome.job.spec
            k = keys_by_trial.get(((spec.suite, spec.optimizer, spec.backend), int(role.trial)))
            if k is not None and k not in rows and outcome.result.status != "interrupted":
                r = outcome.result
                rows[k] = {
                    "status": r.status,
                    "time_to_target_s": r.time_to_target_s,
                    "steps_to_target": r.steps_to_target,
                    "best_val_metric": r.best_val_metric,
                }
        for study in plan.studies:
            suite = get_suite(study.suite)
            mode = metric_mode(suite.val_metric, suite)
            by_trial = {t.index: rows.get(keys_by_trial.get((study.key, t.index), "")) for t in study.trials}
            sel = select(study, by_trial, mode)
            summary.selections.append(sel)
            if on_selection is not None:
                on_selection(sel)
        second = rerun_plan(plan, [s for s in summary.selections if s.decided])
        if second.specs:
            summary.reruns = run_sweep(
                second,
                store,
                executor,
                kind=kind,
                progress=progress("re-runs") if progress else None,
                close_executor=False,
                sweep_id=first.sweep_id,
            )
        else:
            store.finish_sweep(first.sweep_id, "finished")
        return summary
    finally:
        executor.close()
