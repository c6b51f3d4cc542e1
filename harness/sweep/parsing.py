"""Reading a sweep file: TOML in, a validated :class:`~harness.sweep.schema.SweepConfig` out, every
problem reported at once in one :class:`~harness.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from backends.spec import BACKENDS, Distribution
from db.limits import INT32_MAX, int32_problems, text_problems
from harness import external, registry
from harness.errors import ConfigError
from harness.sweep.protocol import (
    DEFAULT_RERUN_SEEDS,
    DEFAULT_SAMPLER,
    DEFAULT_TRIAL_SEED,
    DEFAULT_TRIALS,
    Protocol,
    distribution_from_toml,
)
from harness.sweep.schema import (
    BUDGET_KEYS,
    DEFAULT_TIMEOUT_S,
    DTYPES,
    KEYS,
    TRACKS,
    TUNING_KEYS,
    SweepConfig,
    step_cost_settings,
)
from suites import get_suite
from suites.registry import UnknownSuiteError


class Problems:
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


def suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=2)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _str_list(raw: dict[str, Any], key: str, problems: Problems, *, required: bool) -> tuple[str, ...] | None:
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


def _positive(raw: dict[str, Any], key: str, kind: type, problems: Problems) -> Any:
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


def _seeds(raw: dict[str, Any], problems: Problems) -> tuple[int, ...]:
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
    elif any(v > INT32_MAX for v in value):
        problems.add(f"seeds must be at most {INT32_MAX} (stored as 32-bit integers), got {max(value)}")
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


def _table(raw: dict[str, Any], key: str, problems: Problems) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.add(f"{key} must be a table ([{key}.<name>]), got {value!r}")
        return {}
    return value


def _subtables(
    raw: dict[str, Any], key: str, known: Any, kind: str, shape: str, problems: Problems
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The ``[key.<name>]`` tables of a sweep file whose name is one of ``known`` (the file's
    ``kind``: suites or optimizers) and that are tables; every other entry is a problem."""
    for name, table in _table(raw, key, problems).items():
        if known is not None and name not in known:
            problems.add(f"{key}.{name}: {name!r} is not in {kind}{suggest(name, known)}")
        elif not isinstance(table, dict):
            problems.add(f"{key}.{name} must be a table of {shape}, got {table!r}")
        else:
            yield name, table


def load_config(source: str | Path | Mapping[str, Any], *, where: str | None = None) -> SweepConfig:
    """Parse and type-check a sweep (a TOML path, TOML text via ``where``, or a mapping).

    Names are not resolved here (see :func:`harness.plans.expand`); this is the structural check.
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
    problems = Problems(where)
    for key in raw:
        if key not in KEYS:
            problems.add(f"unknown key {key!r}{suggest(key, list(KEYS))} (known: {', '.join(KEYS)})")

    name = raw.get("name")
    if name is None:
        problems.add("missing required key 'name' (the sweep's name, a string)")
    elif not isinstance(name, str) or not name.strip():
        problems.add(f"name must be a non-empty string, got {name!r}")
    else:
        _limit_problems(text_problems("sweep name", name), problems)
    suites = _str_list(raw, "suites", problems, required=True)
    optimizers = _str_list(raw, "optimizers", problems, required=True)
    for what, values in (("suite", suites), ("optimizer", optimizers)):
        for value in values or ():
            _limit_problems(text_problems(what, value), problems, f"{value[:40]!r}: ")
    backends = _str_list(raw, "backends", problems, required=False) or ("torch",)
    for b in backends:
        if b not in BACKENDS:
            problems.add(f"unknown backend {b!r}{suggest(b, BACKENDS)} (known: {', '.join(BACKENDS)})")
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
    torch_compile = raw.get("torch_compile", False)
    if not isinstance(torch_compile, bool):
        problems.add(f"torch_compile must be true or false, got {torch_compile!r}")
    elif torch_compile and "torch" not in backends:
        problems.add("torch_compile = true, but backends does not include torch")
    track = raw.get("track", "untuned")
    if track not in TRACKS:
        problems.add(f"track must be one of {', '.join(TRACKS)}, got {track!r}")
    tag = raw.get("tag")
    if tag is not None and not (isinstance(tag, str) and tag.strip()):
        problems.add(f"tag must be a non-empty string, got {tag!r}")
    elif tag is not None:
        _limit_problems(text_problems("tag", tag.strip()), problems)
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
            problems.add(f"presets.{opt}: {opt!r} is not in optimizers{suggest(opt, optimizers)}")
        elif not isinstance(preset, str):
            problems.add(f"presets.{opt} must be a preset name (string), got {preset!r}")
        else:
            presets[opt] = preset
    budgets: dict[str, dict[str, Any]] = {}
    for suite, table in _subtables(raw, "budgets", suites, "suites", "steps, time_budget_s", problems):
        sub = Problems(where)
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
    step_cost, step_cost_problems = step_cost_settings(raw.get("step_cost", False))
    for message in step_cost_problems:
        problems.add(message)
    if protocol is not None:
        track = "tuned"
        seeds = protocol.rerun_seeds
    if problems.items:  # report unknown names now too, not after the file's other problems are fixed
        _name_problems(suites or (), optimizers or (), backends, problems)
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
        torch_compile=torch_compile,
        devices=devices,
        workers=workers,
        track=track,
        tag=tag.strip() if isinstance(tag, str) else None,
        hparams=hparams,
        presets=presets,
        budgets=budgets,
        tuning=protocol,
        search=search,
        step_cost=step_cost,
    )


def _name_problems(
    suites: Sequence[str], optimizers: Sequence[str], backends: Sequence[str], problems: Problems
) -> None:
    """Unknown suites and built-in-style optimizer names, found without running anything.

    The full resolution (:func:`harness.sweep.resolve`, adapters described in a worker) only
    runs on a file without other problems; this finds the names it would reject, so one pass
    reports everything. ``module:Class`` references are left to the full resolution.
    """
    for name in suites:
        try:
            get_suite(name)
        except UnknownSuiteError as exc:
            problems.add(f"suites: {exc}")
    usable = [b for b in backends if b in BACKENDS and registry.backend_available(b)]
    if not usable:
        return
    known = {n for b in usable for n in [*registry.builtin_names(b), *external.entry_point_names(b)]}
    for opt in optimizers:
        if ":" not in opt and opt not in known:
            listing = ", ".join(sorted(known))
            problems.add(f"optimizers: unknown optimizer {opt!r}{suggest(opt, sorted(known))} (known: {listing})")


def _limit_problems(found: list[str], problems: Problems, prefix: str = "") -> None:
    """Add the storage-limit problems of one value (:mod:`db.limits`)."""
    for message in found:
        problems.add(prefix + message)


def _non_negative_int(raw: dict[str, Any], key: str, default: int, problems: Problems) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        problems.add(f"{key} must be a non-negative integer, got {value!r}")
        return default
    return value


def _tuning(
    raw: dict[str, Any],
    optimizers: tuple[str, ...] | None,
    hparams: Mapping[str, Mapping[str, Any]],
    problems: Problems,
) -> tuple[Protocol | None, dict[str, dict[str, Distribution]]]:
    """The tuning protocol and search overrides of a sweep with ``trials`` (else ``None``)."""
    if "trials" not in raw:
        for key in TUNING_KEYS:
            if key in raw:
                problems.add(f"{key} only applies to a tuned sweep: add trials = N (e.g. {DEFAULT_TRIALS})")
        return None, {}
    trials = _positive(raw, "trials", int, problems) or DEFAULT_TRIALS
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
    value = raw.get("rerun_seeds", len(DEFAULT_RERUN_SEEDS))
    rerun: tuple[int, ...] = DEFAULT_RERUN_SEEDS
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            problems.add(f"rerun_seeds = {value}: an integer K means seeds 0..K-1 and must be positive")
        else:
            rerun = tuple(range(value))
    elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        rerun = tuple(value)
        for v in rerun:
            _limit_problems(int32_problems("rerun_seeds", v), problems)
    else:
        problems.add(f"rerun_seeds must be a positive integer K (seeds 0..K-1) or a list of integers, got {value!r}")
    sampler = raw.get("sampler", DEFAULT_SAMPLER)
    protocol = Protocol(
        trials=trials,
        rerun_seeds=rerun,
        trial_seed=_non_negative_int(raw, "trial_seed", DEFAULT_TRIAL_SEED, problems),
        sampler=sampler if isinstance(sampler, str) else repr(sampler),
        study_seed=_non_negative_int(raw, "study_seed", 0, problems),
    )
    _limit_problems(int32_problems("trial_seed", protocol.trial_seed), problems)
    for message in protocol.problems():
        problems.add(message)
    search: dict[str, dict[str, Distribution]] = {}
    for opt, table in _subtables(
        raw, "search", optimizers, "optimizers", "name = { log_uniform = [lo, hi] } ...", problems
    ):
        space: dict[str, Distribution] = {}
        for k, v in table.items():
            try:
                space[k] = distribution_from_toml(v)
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
