"""The database read into the frames the site renders (:class:`SiteData`).

:func:`load` reads runs, sweeps, environments, approximation rows, metric series and the newest
stored step costs, describes
the suites (:mod:`leaderboard.catalogue`) and applies the ranking rules
(:mod:`leaderboard.ranking`): derived run columns, boards, entries and tuning studies. Nothing
here decides what is ranked; this module only reads and assembles.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from db import queries
from db.engine import make_engine
from db.step_costs import latest_step_costs
from db.store import Store
from leaderboard import format as fmt
from leaderboard.catalogue import MethodInfo, SuiteInfo, suite_catalogue, suite_from_runs
from leaderboard.ranking import Board, add_failed_studies, aggregate_entries, annotate, boards, study_frame
from leaderboard.series import SERIES_NAMES, SERIES_PREFIXES, MetricSeries


@dataclass
class SiteData:
    """Everything the site shows, as :func:`load` read and ranked it."""

    runs: pd.DataFrame
    metrics: MetricSeries
    environments: pd.DataFrame
    sweeps: pd.DataFrame
    approx: pd.DataFrame
    suites: dict[str, SuiteInfo]
    methods: dict[str, MethodInfo]
    boards: list[Board]
    entries: pd.DataFrame
    #: One row per tuning study; columns in :func:`leaderboard.ranking.study_frame`.
    studies: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: The newest stored step-cost row per (backend, problem, adapter) (``db.step_costs``).
    step_costs: pd.DataFrame = field(default_factory=pd.DataFrame)
    db_url: str = ""
    built_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Whether :attr:`metrics` holds every run's series (else only the newest runs').
    series_complete: bool = True
    #: The database URL, for reading series in worker processes; never rendered (see db_url).
    source_url: str = field(default="", repr=False)

    @property
    def empty(self) -> bool:
        return self.runs.empty

    def series_for(self, run_ids: Sequence[int]) -> MetricSeries:
        """Metric series covering ``run_ids`` (read from the database unless already loaded)."""
        if self.series_complete or not run_ids:
            return self.metrics
        store = _process_store(self.source_url)
        frame = queries.metric_rows(
            store, names=SERIES_NAMES, prefixes=SERIES_PREFIXES, run_id_range=(min(run_ids), max(run_ids))
        )
        wanted = set(int(i) for i in run_ids)
        return MetricSeries(frame[frame["run_id"].isin(wanted)])

    def board(self, key: tuple[str, str, str]) -> Board:
        return next(b for b in self.boards if b.key == key)


def load(
    store: Store,
    *,
    tracks: Iterable[str] | None = None,
    methods: Mapping[str, MethodInfo] | None = None,
    current_adapters: Mapping[tuple[str, str], str] | None = None,
    suites: Mapping[str, SuiteInfo] | None = None,
    now: datetime | None = None,
    all_series: bool = False,
) -> SiteData:
    """Read everything the site shows from ``store`` and derive the ranking columns.

    Metric series are read for the newest runs of each seed (the curves); ``all_series`` reads
    every run's (otherwise :meth:`SiteData.series_for` reads them chunk by chunk).
    """
    runs = queries.runs_frame(store)
    specs = queries.run_specs(store)
    runs["spec"] = [specs.get(int(i), {}) for i in runs["id"]] if len(runs) else pd.Series(dtype=object)
    sweeps = queries.sweeps_frame(store)
    if tracks is not None:
        wanted = list(tracks)
        runs = runs[runs["track"].isin(wanted)].reset_index(drop=True)
        sweeps = sweeps[sweeps["track"].isin(wanted)].reset_index(drop=True)
    runs, sweeps = _objectify(runs), _objectify(sweeps)
    environments = _objectify(queries.environments_frame(store)).set_index("id", drop=False)
    approx = _objectify(queries.approx_frame(store))
    approx = approx[approx["run_id"].isin(runs["id"])] if len(approx) else approx
    methods = dict(methods or {})
    catalogue = dict(suites) if suites is not None else suite_catalogue()
    suite_infos = {}
    for name, rows in runs.groupby("suite", sort=True):
        suite_infos[str(name)] = catalogue.get(str(name)) or suite_from_runs(str(name), rows)
    adapters = dict(current_adapters or {})
    for m in methods.values():
        for backend, version in m.versions.items():
            adapters.setdefault((m.name, backend), version)
    runs = _objectify(_display_forms(annotate(runs, environments, suite_infos, adapters, methods)))
    studies = study_frame(runs, suite_infos)
    entries = add_failed_studies(aggregate_entries(runs), studies)
    # The curves of the scored runs now; every other run's when its page is written
    # (:meth:`SiteData.series_for`), in the worker that writes it.
    complete = all_series or _in_memory(store.url)
    if not len(runs):
        metric_frame = pd.DataFrame()
    elif complete:
        metric_frame = queries.metric_rows(store, names=SERIES_NAMES, prefixes=SERIES_PREFIXES)
        if tracks is not None:
            metric_frame = metric_frame[metric_frame["run_id"].isin(runs["id"])]
    else:
        latest = runs.loc[runs["latest"], "id"].astype(int).tolist()
        metric_frame = queries.metric_rows(store, names=SERIES_NAMES, prefixes=SERIES_PREFIXES, run_ids=latest)
    return SiteData(
        runs=runs,
        metrics=MetricSeries(metric_frame),
        environments=environments,
        sweeps=sweeps,
        approx=approx,
        suites=suite_infos,
        methods=methods,
        boards=boards(runs),
        entries=entries,
        studies=studies,
        step_costs=_objectify(latest_step_costs(store)),
        db_url=store.display_url,
        built_at=now or datetime.now(UTC),
        series_complete=complete,
        source_url=store.url,
    )


_STORES: dict[tuple[int, str], Store] = {}


def _process_store(url: str) -> Store:
    """One connection pool per process and URL: a forked worker must not use its parent's."""
    key = (os.getpid(), url)
    if key not in _STORES:
        _STORES[key] = Store(make_engine(url), url)
    return _STORES[key]


def _in_memory(url: str) -> bool:
    """An in-memory SQLite database is invisible to other processes and connections."""
    return url.startswith("sqlite") and url.split("://", 1)[-1] in ("", "/", "/:memory:")


def _objectify(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Python objects with ``None`` for missing values.

    pandas 3 reads text as its string dtype with NaN for missing values, and NaN is truthy in
    a template (``{% if run.tag %}`` would print "nan").
    """
    frame = frame.copy()
    for col in frame.columns:
        if pd.api.types.is_string_dtype(frame[col]) or frame[col].dtype == object:
            values = frame[col].astype(object)
            frame[col] = values.where(values.notna(), None)
    return frame


def _display_forms(runs: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as text, formatted once for the ten thousand run pages."""
    n = len(runs)
    for col in ("started_at", "finished_at", "when"):
        stamps = pd.to_datetime(runs[col], utc=True, errors="coerce") if n else pd.Series(dtype="datetime64[ns, UTC]")
        runs[f"{col}_text"] = stamps.dt.strftime("%Y-%m-%d %H:%M UTC").astype(object).where(stamps.notna(), fmt.DASH)
    return runs
