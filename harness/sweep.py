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
"""

from __future__ import annotations

import difflib
import itertools
import math
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.spec import BACKENDS, HyperparameterError
from harness import external, keys
from harness.errors import ConfigError
from harness.registry import backend_available
from harness.runner import RunSpec
from harness.worker import LaneError
from suites import get_suite
from suites.registry import UnknownSuiteError

if TYPE_CHECKING:
    from backends.spec import Distribution
    from harness.tuning import Protocol, Study

#: Per-run wall-clock limit when the sweep file sets none (a hung adapter must not hang a nightly).
DEFAULT_TIMEOUT_S = 3600.0
TRACKS: tuple[str, ...] = ("untuned", "tuned")
DTYPES: tuple[str, ...] = ("float32", "float64")

#: Top-level keys of a sweep file and what they hold (also the reference in the docs).
KEYS: dict[str, str] = {
    "name": "sweep name (string, required)",
    "suites": "suite names (list of strings, required)",
    "optimizers": "optimizer names or module:Class references (list of strings, required)",
    "backends": 'backends (list of strings, default ["torch"])',
    "seeds": "seeds (list of non-negative integers, or an integer n for 0..n-1; default [0])",
    "steps": "step budget for every suite (positive integer)",
    "time_budget_s": "steady-state time budget for every suite, seconds (positive number)",
    "timeout_s": f"wall-clock limit per run, seconds (positive number; default {DEFAULT_TIMEOUT_S:g})",
    "eval_every": "evaluation period in steps (positive integer)",
    "dtype": "float32 or float64 (default float32)",
    "stop_at_target": "stop a run when it reaches the suite's target (boolean, default true)",
    "devices": 'devices: "cpu", "auto", or a list of GPU indices / "cuda:N" strings',
    "workers": "parallel worker processes on CPU (positive integer)",
    "track": "ranking track: untuned or tuned (default untuned)",
    "tag": "tag stored with every run (string)",
    "hparams": "per-optimizer hyperparameter overrides: [hparams.<optimizer>] key = value | [values]",
    "presets": "per-optimizer hyperparameter preset: [presets] <optimizer> = name",
    "budgets": "per-suite budget overrides: [budgets.<suite>] steps = N, time_budget_s = S",
    "trials": "tuned track: quasi-random trials per (suite, optimizer, backend) study (positive integer)",
    "rerun_seeds": "tuned track: seeds the chosen configuration is re-run on (K for 0..K-1, or a list; default 3)",
    "trial_seed": "tuned track: the seed every trial runs on, not a re-run seed (default 1000)",
    "sampler": "tuned track: halton or sobol (default halton)",
    "study_seed": "tuned track: scrambling seed of the sampler (non-negative integer, default 0)",
    "search": "tuned track: search-space overrides: [search.<optimizer>] name = { log_uniform = [lo, hi] } "
    "(or uniform, one_minus_log_uniform, choice = [values])",
}
BUDGET_KEYS: tuple[str, ...] = ("steps", "time_budget_s")
#: Keys that only a tuned sweep (one with ``trials``) may use.
TUNING_KEYS: tuple[str, ...] = ("rerun_seeds", "trial_seed", "sampler", "study_seed", "search")


@dataclass(frozen=True)
class RunRole:
    """How a planned run is stored: ``run``; or ``trial``/``rerun`` of a tuning study, with the
    trial index and the configuration's hash (:mod:`harness.tuning`)."""

    role: str = "run"
    trial: int | None = None
    config_hash: str | None = None


PLAIN_RUN = RunRole()


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep file, normalised (every optional field has its effective value)."""

    name: str
    suites: tuple[str, ...]
    optimizers: tuple[str, ...]
    backends: tuple[str, ...] = ("torch",)
    seeds: tuple[int, ...] = (0,)
    steps: int | None = None
    time_budget_s: float | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    eval_every: int | None = None
    dtype: str = "float32"
    stop_at_target: bool = True
    devices: tuple[str, ...] | None = None
    workers: int | None = None
    track: str = "untuned"
    tag: str | None = None
    hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    presets: Mapping[str, str] = field(default_factory=dict)
    budgets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The tuning protocol (a tuned sweep, i.e. one with ``trials``), else ``None``.
    tuning: Protocol | None = None
    #: Per-optimizer search-space overrides of a tuned sweep.
    search: Mapping[str, Mapping[str, Distribution]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored as the sweep row's ``spec``)."""
        tuning = None
        if self.tuning is not None:
            from harness.tuning import distribution_to_dict

            tuning = {
                **self.tuning.to_dict(),
                "search": {
                    opt: {k: distribution_to_dict(d) for k, d in space.items()} for opt, space in self.search.items()
                },
            }
        return {
            "name": self.name,
            "suites": list(self.suites),
            "optimizers": list(self.optimizers),
            "backends": list(self.backends),
            "seeds": list(self.seeds),
            "steps": self.steps,
            "time_budget_s": self.time_budget_s,
            "timeout_s": self.timeout_s,
            "eval_every": self.eval_every,
            "dtype": self.dtype,
            "stop_at_target": self.stop_at_target,
            "devices": list(self.devices) if self.devices is not None else None,
            "workers": self.workers,
            "track": self.track,
            "tag": self.tag,
            "hparams": {k: dict(v) for k, v in self.hparams.items()},
            "presets": dict(self.presets),
            "budgets": {k: dict(v) for k, v in self.budgets.items()},
            "tuning": tuning,
        }


@dataclass(frozen=True)
class SweepPlan:
    """A sweep expanded into run specs, in execution order, with the combinations it skipped."""

    config: SweepConfig
    specs: tuple[RunSpec, ...]
    skipped: tuple[str, ...] = ()
    source: str | None = None
    #: ``(optimizer, backend) -> description`` of every adapter the plan uses.
    adapters: Mapping[tuple[str, str], external.AdapterInfo] = field(default_factory=dict)
    #: How each run is stored (aligned with ``specs``; empty: every run is a plain ``run``).
    roles: tuple[RunRole, ...] = ()
    #: The tuning studies of a tuned sweep (``specs`` are then their trials).
    studies: tuple[Study, ...] = ()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tuned(self) -> bool:
        return self.config.tuning is not None

    def role_of(self, index: int) -> RunRole:
        """The role of ``specs[index]``."""
        return self.roles[index] if self.roles else PLAIN_RUN

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends that at least one run uses, in file order."""
        used = {s.backend for s in self.specs}
        return tuple(b for b in self.config.backends if b in used)

    def to_dict(self) -> dict[str, Any]:
        out = self.config.to_dict()
        out["runs"] = len(self.specs)
        out["skipped"] = list(self.skipped)
        if self.source:
            out["source"] = self.source
        if self.studies:
            out["reruns_planned"] = sum(len(s.protocol.rerun_seeds) for s in self.studies)
            out["studies"] = [s.to_dict() for s in self.studies]
        return out


class _Problems:
    """Collects every validation problem so the user sees them all at once."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            raise ConfigError(f"invalid sweep file {self.where}: {self.items[0]}")
        listing = "\n  - ".join(self.items)
        raise ConfigError(f"invalid sweep file {self.where} ({len(self.items)} problems):\n  - {listing}")


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=2)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _str_list(raw: dict[str, Any], key: str, problems: _Problems, *, required: bool) -> tuple[str, ...] | None:
    if key not in raw:
        if required:
            problems.add(f"missing required key {key!r} ({KEYS[key]})")
        return None
    value = raw[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        problems.add(f"{key} must be a list of non-empty strings, got {value!r}")
        return None
    if not value:
        problems.add(f"{key} is empty: the sweep would have no runs")
        return None
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        problems.add(f"{key} lists {', '.join(map(repr, dupes))} more than once")
    return tuple(dict.fromkeys(value))


def _positive(raw: dict[str, Any], key: str, kind: type, problems: _Problems) -> Any:
    if key not in raw:
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.add(f"{key} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")
        return None
    if kind is int and not isinstance(value, int):
        problems.add(f"{key} must be a positive integer, got {value!r}")
        return None
    if not math.isfinite(value) or value <= 0:
        problems.add(f"{key} must be positive, got {value!r}")
        return None
    return kind(value)


def _seeds(raw: dict[str, Any], problems: _Problems) -> tuple[int, ...]:
    value = raw.get("seeds", [0])
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            problems.add(f"seeds = {value}: an integer means seeds 0..n-1 and must be positive")
            return ()
        return tuple(range(value))
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        problems.add(f"seeds must be a list of integers (or an integer n for 0..n-1), got {value!r}")
        return ()
    if not value:
        problems.add("seeds is empty: the sweep would have no runs")
    if any(v < 0 for v in value):
        problems.add(f"seeds must be non-negative, got {value!r}")
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        problems.add(f"seeds lists {', '.join(map(str, dupes))} more than once")
    return tuple(dict.fromkeys(value))


def parse_devices(value: Any) -> tuple[str, ...] | None:
    """``"cpu"``, ``"auto"`` (→ ``None``), ``"0,1"``, ``[0, 1]`` or ``["cuda:0"]`` → device strings.

    Raises :class:`ConfigError` for anything else.
    """
    if value is None:
        return None
    items: list[Any]
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "auto"):
            return None
        if text == "cpu":
            return ("cpu",)
        items = [v.strip() for v in text.split(",") if v.strip()]
    elif isinstance(value, list):
        items = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        raise ConfigError(f'devices must be "cpu", "auto", GPU indices or "cuda:N" strings, got {value!r}')
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(f"invalid device {item!r}")
        if isinstance(item, int):
            index = item
        elif isinstance(item, str) and item.strip().lower() == "cpu":
            if len(items) > 1:
                raise ConfigError('devices: "cpu" cannot be combined with GPUs')
            return ("cpu",)
        elif isinstance(item, str):
            text = item.strip().lower().removeprefix("cuda:").removeprefix("gpu:")
            if not text.isdigit():
                raise ConfigError(f'invalid device {item!r} (use "cpu", a GPU index or "cuda:N")')
            index = int(text)
        else:
            raise ConfigError(f"invalid device {item!r}")
        if index < 0:
            raise ConfigError(f"invalid device {item!r}: GPU indices are non-negative")
        dev = f"cuda:{index}"
        if dev in out:
            raise ConfigError(f"device {dev} is listed twice")
        out.append(dev)
    if not out:
        raise ConfigError("devices is empty")
    return tuple(out)


def _table(raw: dict[str, Any], key: str, problems: _Problems) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.add(f"{key} must be a table ([{key}.<name>]), got {value!r}")
        return {}
    return value


def _subtables(
    raw: dict[str, Any], key: str, known: Any, kind: str, shape: str, problems: _Problems
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``[key.<name>]`` tables of a sweep file whose name is one of ``known`` (the file's
    ``kind``: suites or optimizers) and that are tables; every other entry is a problem."""
    for name, table in _table(raw, key, problems).items():
        if known is not None and name not in known:
            problems.add(f"{key}.{name}: {name!r} is not in {kind}{_suggest(name, known)}")
        elif not isinstance(table, dict):
            problems.add(f"{key}.{name} must be a table of {shape}, got {table!r}")
        else:
            yield name, table


def load_config(source: str | Path | Mapping[str, Any], *, where: str | None = None) -> SweepConfig:
    """Parse and type-check a sweep (a TOML path, TOML text via ``where``, or a mapping).

    Names are not resolved here (see :func:`expand`); this is the structural check.
    """
    if isinstance(source, Mapping):
        raw = dict(source)
        where = where or "<mapping>"
    else:
        path = Path(source)
        where = where or str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"sweep file {where} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read sweep file {where}: {exc}") from None
        raw = parse_toml(text, where)
    problems = _Problems(where)
    for key in raw:
        if key not in KEYS:
            problems.add(f"unknown key {key!r}{_suggest(key, list(KEYS))} (known: {', '.join(KEYS)})")

    name = raw.get("name")
    if name is None:
        problems.add("missing required key 'name' (the sweep's name, a string)")
    elif not isinstance(name, str) or not name.strip():
        problems.add(f"name must be a non-empty string, got {name!r}")
    suites = _str_list(raw, "suites", problems, required=True)
    optimizers = _str_list(raw, "optimizers", problems, required=True)
    backends = _str_list(raw, "backends", problems, required=False) or ("torch",)
    for b in backends:
        if b not in BACKENDS:
            problems.add(f"unknown backend {b!r}{_suggest(b, BACKENDS)} (known: {', '.join(BACKENDS)})")
    seeds = _seeds(raw, problems)
    steps = _positive(raw, "steps", int, problems)
    time_budget = _positive(raw, "time_budget_s", float, problems)
    timeout = _positive(raw, "timeout_s", float, problems)
    eval_every = _positive(raw, "eval_every", int, problems)
    workers = _positive(raw, "workers", int, problems)
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        problems.add(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    stop = raw.get("stop_at_target", True)
    if not isinstance(stop, bool):
        problems.add(f"stop_at_target must be true or false, got {stop!r}")
    track = raw.get("track", "untuned")
    if track not in TRACKS:
        problems.add(f"track must be one of {', '.join(TRACKS)}, got {track!r}")
    tag = raw.get("tag")
    if tag is not None and not (isinstance(tag, str) and tag.strip()):
        problems.add(f"tag must be a non-empty string, got {tag!r}")
    devices = None
    try:
        devices = parse_devices(raw.get("devices"))
    except ConfigError as exc:
        problems.add(str(exc))

    hparams: dict[str, dict[str, Any]] = {}
    for opt, table in _subtables(raw, "hparams", optimizers, "optimizers", "name = value", problems):
        for k, v in table.items():
            if isinstance(v, list) and not v:
                problems.add(f"hparams.{opt}.{k} is an empty list: the grid would have no points")
            if isinstance(v, dict):
                problems.add(f"hparams.{opt}.{k} must be a value or a list of values, got a table")
        hparams[opt] = dict(table)
    presets: dict[str, str] = {}
    for opt, preset in _table(raw, "presets", problems).items():
        if optimizers is not None and opt not in optimizers:
            problems.add(f"presets.{opt}: {opt!r} is not in optimizers{_suggest(opt, optimizers)}")
        elif not isinstance(preset, str):
            problems.add(f"presets.{opt} must be a preset name (string), got {preset!r}")
        else:
            presets[opt] = preset
    budgets: dict[str, dict[str, Any]] = {}
    for suite, table in _subtables(raw, "budgets", suites, "suites", "steps, time_budget_s", problems):
        sub = _Problems(where)
        for k in table:
            if k not in BUDGET_KEYS:
                problems.add(f"budgets.{suite}: unknown key {k!r} (known: {', '.join(BUDGET_KEYS)})")
        entry = {
            "steps": _positive(table, "steps", int, sub),
            "time_budget_s": _positive(table, "time_budget_s", float, sub),
        }
        for item in sub.items:
            problems.add(f"budgets.{suite}: {item}")
        budgets[suite] = {k: v for k, v in entry.items() if v is not None}
    protocol, search = _tuning(raw, optimizers, hparams, problems)
    if protocol is not None:
        track = "tuned"
        seeds = protocol.rerun_seeds
    problems.raise_if_any()
    assert suites is not None and optimizers is not None and isinstance(name, str)
    return SweepConfig(
        name=name.strip(),
        suites=suites,
        optimizers=optimizers,
        backends=backends,
        seeds=seeds,
        steps=steps,
        time_budget_s=time_budget,
        timeout_s=timeout if timeout is not None else DEFAULT_TIMEOUT_S,
        eval_every=eval_every,
        dtype=dtype,
        stop_at_target=stop,
        devices=devices,
        workers=workers,
        track=track,
        tag=tag.strip() if isinstance(tag, str) else None,
        hparams=hparams,
        presets=presets,
        budgets=budgets,
        tuning=protocol,
        search=search,
    )


def _non_negative_int(raw: dict[str, Any], key: str, default: int, problems: _Problems) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.add(f"{key} must be a non-negative integer, got {value!r}")
        return default
    return value


def _tuning(
    raw: dict[str, Any],
    optimizers: tuple[str, ...] | None,
    hparams: Mapping[str, Mapping[str, Any]],
    problems: _Problems,
) -> tuple[Protocol | None, dict[str, dict[str, Distribution]]]:
    """The tuning protocol and search overrides of a sweep with ``trials`` (else ``None``)."""
    from harness import tuning

    if "trials" not in raw:
        for key in TUNING_KEYS:
            if key in raw:
                problems.add(f"{key} only applies to a tuned sweep: add trials = N (e.g. {tuning.DEFAULT_TRIALS})")
        return None, {}
    trials = _positive(raw, "trials", int, problems) or tuning.DEFAULT_TRIALS
    if raw.get("track", "tuned") != "tuned":
        problems.add('trials runs the tuning protocol, which is the tuned track: set track = "tuned" or leave it out')
    if "seeds" in raw:
        problems.add(
            "seeds: a tuned sweep runs every trial on trial_seed and re-runs the chosen configuration on "
            "rerun_seeds; remove seeds"
        )
    for opt, table in hparams.items():
        for k, v in table.items():
            if isinstance(v, list):
                problems.add(
                    f"hparams.{opt}.{k}: a tuned sweep has no grid axes (the search replaces them); "
                    f"fix one value, or change the searched range in [search.{opt}]"
                )
    value = raw.get("rerun_seeds", len(tuning.DEFAULT_RERUN_SEEDS))
    rerun: tuple[int, ...] = tuning.DEFAULT_RERUN_SEEDS
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            problems.add(f"rerun_seeds = {value}: an integer K means seeds 0..K-1 and must be positive")
        else:
            rerun = tuple(range(value))
    elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        rerun = tuple(value)
    else:
        problems.add(f"rerun_seeds must be a positive integer K (seeds 0..K-1) or a list of integers, got {value!r}")
    sampler = raw.get("sampler", tuning.DEFAULT_SAMPLER)
    protocol = tuning.Protocol(
        trials=trials,
        rerun_seeds=rerun,
        trial_seed=_non_negative_int(raw, "trial_seed", tuning.DEFAULT_TRIAL_SEED, problems),
        sampler=sampler if isinstance(sampler, str) else repr(sampler),
        study_seed=_non_negative_int(raw, "study_seed", 0, problems),
    )
    for message in protocol.problems():
        problems.add(message)
    search: dict[str, dict[str, Distribution]] = {}
    for opt, table in _subtables(
        raw, "search", optimizers, "optimizers", "name = { log_uniform = [lo, hi] } ...", problems
    ):
        space: dict[str, Distribution] = {}
        for k, v in table.items():
            try:
                space[k] = tuning.distribution_from_toml(v)
            except ValueError as exc:
                problems.add(f"search.{opt}.{k}: {exc}")
            if k in hparams.get(opt, {}):
                problems.add(f"search.{opt}.{k}: {k!r} is also fixed in hparams.{opt}; keep one")
        search[opt] = space
    return protocol, search


def parse_toml(text: str, where: str = "<sweep>") -> dict[str, Any]:
    """``tomllib.loads`` with the error turned into one :class:`ConfigError` line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML in {where}: {exc}") from None


def grid(overrides: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid points of one optimizer's overrides (lists are axes; key order kept)."""
    names = list(overrides)
    axes = [v if isinstance(v, list) else [v] for v in overrides.values()]
    return [dict(zip(names, point)) for point in itertools.product(*axes)]


def expand(config: SweepConfig, *, where: str | None = None) -> SweepPlan:
    """Resolve every name and hyperparameter and list the runs (raises ``ConfigError``)."""
    where = where or config.name
    problems = _Problems(where)
    skipped: list[str] = []
    suites = {}
    for name in config.suites:
        try:
            suites[name] = get_suite(name)
        except UnknownSuiteError as exc:
            problems.add(f"suites: {exc}")
    backends = []
    for b in config.backends:
        if not backend_available(b):
            problems.add(f"backend {b!r} is not installed" + (" (pip install 'ngbench[jax]')" if b == "jax" else ""))
        else:
            backends.append(b)
    # Third-party adapters are described (and their hyperparameters validated) in a scrubbed
    # worker: this process may hold database credentials (harness.external). A tuned sweep's
    # trial points are known only once the adapters' spaces are; they are validated below.
    points = {opt: grid(config.hparams.get(opt, {})) for opt in config.optimizers}
    pairs = [(opt, b) for opt in config.optimizers for b in backends]
    try:
        answers = external.describe(
            [
                external.DescribeRequest(opt, b, tuple((p, config.presets.get(opt)) for p in points[opt]))
                for opt, b in pairs
            ]
        )
    except LaneError as exc:
        raise ConfigError(f"invalid sweep file {where}: could not describe its adapters: {exc}") from None
    adapters: dict[tuple[str, str], external.AdapterInfo] = {}
    for opt in config.optimizers:
        found, errors = [], []
        for b in backends:
            answer = answers[pairs.index((opt, b))]
            if isinstance(answer, str):
                errors.append(answer)
            else:
                adapters[(opt, b)] = answer
                found.append(b)
        if backends and not found:
            problems.add(f"optimizers: {errors[0]}")
        for b in backends:
            if b not in found and found:
                skipped.append(f"{opt} has no {b} adapter")
    for (opt, b), info in adapters.items():
        for point in points[opt]:
            try:
                info.resolve(point, config.presets.get(opt))
            except HyperparameterError as exc:
                problems.add(f"hparams.{opt} ({b}): {exc}")
                break
    problems.raise_if_any()
    if config.tuning is not None:
        return _expand_tuned(config, where, suites, backends, adapters, skipped)

    specs: list[RunSpec] = []
    for suite_name, suite in suites.items():
        budget = config.budgets.get(suite_name, {})
        for b in backends:
            for opt in config.optimizers:
                adapter = adapters.get((opt, b))
                if adapter is None:
                    continue
                if suite.likelihood not in adapter.likelihoods:
                    skipped.append(f"{opt} ({b}) does not support {suite.likelihood} on {suite_name}")
                    continue
                for point in points[opt]:
                    for seed in config.seeds:
                        specs.append(
                            RunSpec(
                                suite=suite_name,
                                optimizer=opt,
                                backend=b,
                                seed=seed,
                                steps=budget.get("steps", config.steps),
                                hparams=dict(point),
                                preset=config.presets.get(opt),
                                device="auto",
                                dtype=config.dtype,
                                tag=config.tag,
                                time_budget_s=budget.get("time_budget_s", config.time_budget_s),
                                timeout_s=config.timeout_s,
                                stop_at_target=config.stop_at_target,
                                eval_every=config.eval_every,
                            )
                        )
    if not specs:
        why = "; ".join(skipped) or "no combinations"
        raise ConfigError(f"invalid sweep file {where}: the sweep has no runs ({why})")
    return SweepPlan(config=config, specs=tuple(specs), skipped=tuple(skipped), source=where, adapters=adapters)


def _template(config: SweepConfig, suite_name: str, optimizer: str, backend: str) -> RunSpec:
    budget = config.budgets.get(suite_name, {})
    return RunSpec(
        suite=suite_name,
        optimizer=optimizer,
        backend=backend,
        seed=0,
        steps=budget.get("steps", config.steps),
        hparams={},
        preset=config.presets.get(optimizer),
        device="auto",
        dtype=config.dtype,
        tag=config.tag,
        time_budget_s=budget.get("time_budget_s", config.time_budget_s),
        timeout_s=config.timeout_s,
        stop_at_target=config.stop_at_target,
        eval_every=config.eval_every,
    )


def _expand_tuned(
    config: SweepConfig,
    where: str,
    suites: Mapping[str, Any],
    backends: Sequence[str],
    adapters: Mapping[tuple[str, str], external.AdapterInfo],
    skipped: list[str],
) -> SweepPlan:
    """The trials of every (suite, optimizer, backend) study of a tuned sweep (phase 1)."""
    from harness import tuning

    assert config.tuning is not None
    protocol = config.tuning
    problems = _Problems(where)
    spaces: dict[tuple[str, str], dict[str, Any]] = {}
    for (opt, b), info in adapters.items():
        known = {h.name for h in info.hyperparams}
        overrides = dict(config.search.get(opt, {}))
        for name in overrides:
            if name not in known:
                problems.add(
                    f"search.{opt}.{name}: {name!r} is not a hyperparameter of {opt}{_suggest(name, sorted(known))}"
                )
        try:
            declared = tuning.adapter_space(opt, b, info)
        except ValueError as exc:
            problems.add(f"{opt} ({b}): {exc}")
            continue
        spaces[(opt, b)] = tuning.effective_space(declared, config.hparams.get(opt, {}), overrides)
    problems.raise_if_any()

    # Sample every study's points (independent of the backend), then validate them all, with
    # the ends of every overridden range, in one describe call per adapter.
    fixed = {opt: dict(config.hparams.get(opt, {})) for opt in config.optimizers}
    sampled: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    requests: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (opt, b), space in spaces.items():
        edges = []
        for name, dist in config.search.get(opt, {}).items():
            for u in (0.0, 1.0 - 1e-12):
                edges.append({**fixed[opt], name: sample_value(dist, u)})
        requests[(opt, b)] = edges
        for suite_name in suites:
            pts = tuning.study_points(suite_name, opt, space, fixed[opt], protocol)
            sampled[(suite_name, opt, b)] = pts
            requests[(opt, b)].extend(pts)
    pairs = list(requests)
    try:
        answers = external.describe(
            [
                external.DescribeRequest(opt, b, tuple((p, config.presets.get(opt)) for p in requests[(opt, b)]))
                for opt, b in pairs
            ]
        )
    except LaneError as exc:
        raise ConfigError(f"invalid sweep file {where}: could not describe its adapters: {exc}") from None
    described: dict[tuple[str, str], external.AdapterInfo] = {}
    for (opt, b), answer in zip(pairs, answers, strict=True):
        if isinstance(answer, str):
            problems.add(f"optimizers: {answer}")
            continue
        described[(opt, b)] = answer
        for point in requests[(opt, b)][: 2 * len(config.search.get(opt, {}))]:
            try:
                answer.resolve(point, config.presets.get(opt))
            except HyperparameterError as exc:
                problems.add(f"search.{opt} ({b}): the range reaches a value the adapter refuses: {exc}")
                break
    problems.raise_if_any()

    studies: list[Any] = []
    specs: list[RunSpec] = []
    roles: list[RunRole] = []
    for suite_name, suite in suites.items():
        for b in backends:
            for opt in config.optimizers:
                described_info = described.get((opt, b))
                if described_info is None:
                    continue
                info = described_info
                if suite.likelihood not in info.likelihoods:
                    skipped.append(f"{opt} ({b}) does not support {suite.likelihood} on {suite_name}")
                    continue
                space = spaces[(opt, b)]

                def resolve(point: Mapping[str, Any], preset: str | None, _info: Any = info) -> dict[str, Any]:
                    return _info.resolve(point, preset)

                try:
                    study = tuning.plan_study(
                        suite_name,
                        opt,
                        b,
                        protocol=protocol,
                        space=space,
                        fixed=fixed[opt],
                        preset=config.presets.get(opt),
                        template=_template(config, suite_name, opt, b),
                        resolve=resolve,
                    )
                except HyperparameterError as exc:
                    problems.add(f"search space of {opt} ({b}) on {suite_name}: a sampled point is refused: {exc}")
                    continue
                studies.append(study)
                for trial in study.trials:
                    specs.append(study.trial_spec(trial))
                    roles.append(RunRole("trial", trial.index, trial.config_hash))
                if study.note:
                    skipped.append(f"{study.label}: {study.note}")
    problems.raise_if_any()
    if not specs:
        why = "; ".join(skipped) or "no combinations"
        raise ConfigError(f"invalid sweep file {where}: the sweep has no runs ({why})")
    return SweepPlan(
        config=config,
        specs=tuple(specs),
        skipped=tuple(skipped),
        source=where,
        adapters=described,
        roles=tuple(roles),
        studies=tuple(studies),
    )


def sample_value(dist: Any, u: float) -> Any:
    from backends.spec import sample_distribution

    return sample_distribution(dist, u)


def load(path: str | Path) -> SweepPlan:
    """Parse, validate and expand the sweep file at ``path``."""
    return expand(load_config(path), where=str(path))


def expected_key(spec: RunSpec, environment: Mapping[str, Any], adapter: external.AdapterInfo | None = None) -> str:
    """The key :func:`harness.runner.execute` will give ``spec`` in ``environment``.

    ``environment`` needs ``device_kind`` and ``device_name`` of the device the run will use
    (a worker's probe); framework versions are this process's (a homogeneous installation is
    assumed; the worker's own key is what gets stored). ``adapter``: the plan's description of
    the spec's adapter (required for third-party adapters, which are not imported here).
    """
    suite = get_suite(spec.suite)
    if adapter is None:
        request = external.DescribeRequest(spec.optimizer, spec.backend, ((spec.hparams, spec.preset),))
        answer = external.describe([request])[0]
        if isinstance(answer, str):
            raise ConfigError(answer)
        adapter = answer
    hparams = adapter.resolve(spec.hparams, spec.preset)
    return keys.run_key_for(spec, suite, adapter.name, adapter.version, hparams, dict(environment))
