"""``ngbench site build``: render the static leaderboard from the database alone.

The output works from ``file://`` and from any static host: relative links only, every asset
local (CSS, one small JavaScript file that only sorts tables, SVG plots), a strict
Content-Security-Policy (no inline script or style), and no JavaScript needed to read a number.

Safety: run tags, hyperparameter values, error texts, optimizer and suite names are
user-controlled. Templates autoescape everything (``select_autoescape``), nothing from the
database is marked safe, page file names are :func:`leaderboard.format.slug` forms or integer
ids, the SVG charts escape their text, and CSV cells that look like spreadsheet formulas are
neutralised.

The build writes into a fresh sibling directory and swaps it in at the end, so a failed build
leaves the previous site intact; it refuses to replace a non-empty directory that it did not
build (marker file ``.ngbench-site``).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from db.engine import masked
from db.store import Store
from leaderboard import data as site_data
from leaderboard import export, plots, scoring, svg, views
from leaderboard import format as fmt
from leaderboard.data import Board, MethodInfo, SiteData, SuiteInfo
from leaderboard.errors import SiteError

MARKER = ".ngbench-site"
STATIC = Path(__file__).resolve().parent / "static"
TEMPLATES = Path(__file__).resolve().parent / "templates"
#: Runs listed per page of a suite's run index.
RUNS_PER_PAGE = 500


@dataclass(frozen=True)
class BuildReport:
    out: Path
    pages: int
    plots: int
    runs: int
    seconds: float
    timings: Mapping[str, float]


def _environment() -> Environment:
    env = Environment(
        # A path, not PackageLoader: it works for any install (editable finders included).
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "xml"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        seconds=fmt.seconds,
        bytes=fmt.bytes_,
        ratio=fmt.ratio,
        num=fmt.number,
        integer=fmt.integer,
        value=fmt.value,
        sortkey=fmt.sort_key,
        passes=fmt.passes,
        text=fmt.text,
        slug=fmt.slug,
        score=lambda v: fmt.DASH if fmt.finite(v) is None else f"{float(v):.3f}",
        date=lambda v: _date(v),
        short=lambda v, n=10: fmt.DASH if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)[:n],
    )
    env.globals.update(status_words=views.STATUS_WORDS, failed_statuses=site_data.FAILED_STATUSES, DASH=fmt.DASH)
    return env


def _date(v: Any) -> str:
    if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return fmt.DASH
    if isinstance(v, datetime):  # pd.Timestamp included
        v = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        ts = pd.Timestamp(v)
    except (TypeError, ValueError):
        return str(v)
    if pd.isna(ts):
        return fmt.DASH
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")


def _db_label(url: str) -> str:
    """Where the data came from, without host names or credentials."""
    text = masked(url)
    scheme, _, rest = text.partition("://")
    name = rest.rsplit("/", 1)[-1] if rest else ""
    return f"{scheme.split('+')[0]} database {name}".strip()


# ---------------------------------------------------------------------------------- build


def build(
    store: Store,
    out: str | os.PathLike[str] = "site",
    *,
    tracks: Iterable[str] | None = None,
    methods: Mapping[str, MethodInfo] | None = None,
    current_adapters: Mapping[tuple[str, str], str] | None = None,
    suites: Mapping[str, SuiteInfo] | None = None,
    now: datetime | None = None,
    jobs: int | None = None,
) -> BuildReport:
    """Render the site for ``store`` into ``out`` (replaced atomically when the build succeeds).

    ``methods`` (method cards) and ``current_adapters`` ((optimizer, backend) -> adapter
    version) come from the CLI, which may import the registry; see :mod:`leaderboard.data`.
    ``jobs``: processes for the plots and run pages (default: the CPU count, at most 4; 1 runs
    everything in this process).
    """
    t0 = time.perf_counter()
    out = Path(out)
    _check_output(out)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    data = site_data.load(
        store,
        tracks=list(tracks) if tracks else None,
        methods=methods,
        current_adapters=current_adapters,
        suites=suites,
        now=now,
    )
    timings["load"] = time.perf_counter() - tick
    staging = out.parent / f".{out.name}.build-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        writer = _Writer(data, staging, timings, jobs=_jobs(jobs))
        writer.write_all()
        (staging / MARKER).write_text("built by ngbench site build\n")
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildReport(
        out=out,
        pages=writer.pages,
        plots=writer.plots,
        runs=len(data.runs),
        seconds=time.perf_counter() - t0,
        timings=dict(timings),
    )


def _jobs(jobs: int | None) -> int:
    if jobs is not None:
        return max(1, int(jobs))
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SiteError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise SiteError(f"refusing to replace {out}: it is not empty and was not built by ngbench (no {MARKER})")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise SiteError(f"cannot write the site: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SiteError(f"cannot write the site: directory {parent} is not writable")


def _swap(staging: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


#: The writer of the build in progress, inherited by forked worker processes (so that the data
#: is shared copy-on-write instead of pickled to each task).
_WRITER: _Writer | None = None
#: Run pages per task.
RUN_CHUNK = 400


def _run_task(task: tuple[str, tuple[Any, ...], dict[str, Any]]) -> tuple[int, int]:
    assert _WRITER is not None
    name, args, kwargs = task
    return getattr(_WRITER, name)(*args, **kwargs)


class _Writer:
    def __init__(self, data: SiteData, out: Path, timings: dict[str, float], jobs: int = 1) -> None:
        self.data = data
        self.out = out
        self.timings = timings
        self.jobs = jobs
        #: Deferred work (plots, run pages): ``(method name, args, kwargs)``.
        self.tasks: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._board_views: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._approx: list[dict[str, Any]] | None = None
        self._tunability: list[dict[str, Any]] | None = None
        self._pool: Any = None
        self._pending: list[Any] = []
        self.env = _environment()
        self.pages = 0
        self.plots = 0
        self.optimizers = views.optimizer_order(data)
        self.style = plots.styles(self.optimizers)
        self.board_pages = {b.key: f"boards/{b.slug}.html" for b in data.boards}
        self.common = {
            "built": _date(data.built_at),
            "db": _db_label(data.db_url) if data.db_url else "",
            "boards": data.boards,
            "tau_max": scoring.TAU_MAX,
        }

    def board_view(self, board: Board) -> dict[str, Any]:
        if board.key not in self._board_views:
            self._board_views[board.key] = views.board_scores(self.data, board)
        return self._board_views[board.key]

    def approx(self) -> list[dict[str, Any]]:
        if self._approx is None:
            self._approx = views.approx_views(self.data)
        return self._approx

    def plot(self, kind: str, path: str, *args: Any, **kwargs: Any) -> str:
        """Schedule a matplotlib figure; returns its site path (the page can link it now)."""
        self.submit(("_plot", (kind, path, *args), kwargs))
        self.plots += 1
        return path

    def _plot(self, kind: str, path: str, *args: Any, **kwargs: Any) -> tuple[int, int]:
        getattr(plots, kind)(*args, path=self.out / path, **kwargs)
        return 0, 1

    def submit(self, task: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None:
        """Run ``task`` in a worker when the pool is up, else later in this process."""
        if self._pool is not None:
            self._pending.append(self._pool.apply_async(_run_task, (task,)))
        else:
            self.tasks.append(task)

    def start_pool(self) -> None:
        """Fork the workers now, so that they write run pages while this process writes the
        rest; they inherit the loaded data (copy-on-write) through :data:`_WRITER`."""
        global _WRITER
        if self.jobs <= 1:
            return
        _WRITER = self
        self._pool = multiprocessing.get_context("fork").Pool(self.jobs)
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            self.submit(task)

    def finish_tasks(self) -> None:
        """Wait for the workers (re-raising their errors), or run the tasks here."""
        global _WRITER
        if self._pool is None:
            tasks, self.tasks = self.tasks, []
            for name, args, kwargs in tasks:
                getattr(self, name)(*args, **kwargs)
            return
        try:
            for pending in self._pending:
                pending.get()
            self._pool.close()
            self._pool.join()
        finally:
            self._pool.terminate()
            self._pool = None
            self._pending = []
            _WRITER = None

    def abort(self) -> None:
        global _WRITER
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        _WRITER = None

    # ----------------------------------------------------------------- helpers
    def render(self, template: str, path: str, *, counted: bool = False, **context: Any) -> None:
        """Write one page; ``counted``: already counted when it was scheduled (a task)."""
        depth = path.count("/")
        page = self.env.get_template(template).render(root="../" * depth, page=path, **self.common, **context)
        target = self.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
        if not counted:
            self.pages += 1

    def timed(self, name: str, fn: Any) -> None:
        tick = time.perf_counter()
        fn()
        self.timings[name] = time.perf_counter() - tick

    def write_all(self) -> None:
        shutil.copytree(STATIC, self.out / "static")
        # Browsers ask any HTTP host for /favicon.ico (e.g. when a JSON export is opened).
        (self.out / "favicon.ico").write_bytes(_favicon_ico())
        try:
            self.timed("runs", self.write_runs)
            self.start_pool()
            self.timed("overview", self.write_overview)
            self.timed("suites", self.write_suites)
            self.timed("optimizers", self.write_optimizers)
            self.timed("approx", self.write_approx)
            self.timed("history", self.write_history)
            self.timed("tunability", self.write_tunability)
            self.timed("exports", self.write_exports)
            self.timed("waiting for plots and run pages", self.finish_tasks)
        except BaseException:
            self.abort()
            raise

    # ----------------------------------------------------------------- overview
    def write_overview(self) -> None:
        data = self.data
        if not data.boards:
            self.render("overview.html", "index.html", board=None, view=None, selectors={}, environments=[])
            return
        for i, board in enumerate(data.boards):
            view = self.board_view(board)
            plot = None
            if view["profile_points"]:
                plot = self.plot(
                    "profiles",
                    f"plots/profile-{board.slug}.svg",
                    view["profile_points"],
                    self.style,
                    tau_max=scoring.TAU_MAX,
                )
            context: dict[str, Any] = {
                "board": board,
                "view": view,
                "selectors": self.selectors(board),
                "environments": views.board_environments(data, board),
                "profile_plot": plot,
                "board_pages": self.board_pages,
                "counts": self.board_counts(board),
                "protocols": views.tuning_protocols(data, board),
                "tunability_page": self.tunability_page(board),
            }
            self.render("overview.html", self.board_pages[board.key], **context)
            if i == 0:
                self.render("overview.html", "index.html", **context)

    def tunability(self) -> list[dict[str, Any]]:
        if self._tunability is None:
            self._tunability = views.tunability_views(self.data)
        return self._tunability

    def tunability_page(self, board: Board) -> str | None:
        """The tunability section of the board's (backend, hardware), if both tracks exist there."""
        for v in self.tunability():
            if (v["backend"], v["hardware"]) == (board.backend, board.hardware):
                return f"tunability.html#{v['slug']}"
        return None

    def write_tunability(self) -> None:
        found = self.tunability()
        rows = []
        for v in found:
            v["plot"] = None
            if v["points"]:
                v["plot"] = self.plot(
                    "profiles", f"plots/{v['slug']}.svg", v["points"], self.style, tau_max=scoring.TAU_MAX
                )
            for r in v["rows"]:
                rows.append({"backend": v["backend"], "hardware": v["hardware"], **r})
        self.render(
            "tunability.html",
            "tunability.html",
            views_=found,
            board_pages=self.board_pages,
            protocols={v["slug"]: views.tuning_protocols(self.data, v["tuned"]) for v in found},
        )
        self.write_table("data/tunability", pd.DataFrame(rows))

    def board_counts(self, board: Board) -> dict[str, int]:
        r = self.data.runs
        mine = r[(r["track"] == board.track) & (r["backend"] == board.backend) & (r["hardware"] == board.hardware)]
        return {
            "runs": len(mine),
            "scored": int(mine["scored"].sum()),
            "stale": int(mine["stale"].sum()),
            "superseded": int(mine["superseded"].sum()),
            "trials": int((mine["role"] == "trial").sum()),
            "nonstandard": int((mine["protocol_note"] != "").sum()),
            "unscored": int((~mine["scored"] & ~mine["stale"] & ~mine["superseded"]).sum()),
        }

    def selectors(self, board: Board) -> dict[str, list[dict[str, Any]]]:
        """Track, backend and hardware links to the closest existing board of each choice."""
        boards = self.data.boards

        def pick(**want: str) -> Board:
            best = None
            for b in boards:
                score = sum(getattr(b, k) == v for k, v in want.items())
                if all(getattr(b, k) == v for k, v in list(want.items())[:1]) and (best is None or score > best[0]):
                    best = (score, b)
            assert best is not None
            return best[1]

        out: dict[str, list[dict[str, Any]]] = {}
        for field_name in ("track", "backend", "hardware"):
            options = []
            for value in dict.fromkeys(getattr(b, field_name) for b in boards):
                others = {k: getattr(board, k) for k in ("track", "backend", "hardware") if k != field_name}
                target = pick(**{field_name: value}, **others)
                options.append(
                    {
                        "label": value,
                        "href": self.board_pages[target.key],
                        "current": getattr(board, field_name) == value,
                    }
                )
            out[field_name] = options
        return out

    # ----------------------------------------------------------------- suites
    def write_suites(self) -> None:
        data = self.data
        listing = []
        for name, info in data.suites.items():
            runs = data.runs[data.runs["suite"] == name]
            sections = []
            for board in data.boards:
                board_runs = runs[
                    (runs["track"] == board.track)
                    & (runs["backend"] == board.backend)
                    & (runs["hardware"] == board.hardware)
                ]
                trials = board_runs[board_runs["role"] == "trial"]
                entries = views.suite_entries(data, name, board)
                studies = views.study_rows(data, name, board)
                if entries.empty and trials.empty:
                    continue
                curves = views.convergence_curves(data, name, board, info.val_metric) if len(entries) else []
                plot = None
                if len(curves):
                    plot = self.plot(
                        "convergence",
                        f"plots/convergence-{board.slug}-{fmt.slug(name)}.svg",
                        curves,
                        self.style,
                        val_metric=info.val_metric,
                        val_log=info.metric_mode(info.val_metric) == "min",
                        target=info.target_value if info.target_metric == info.val_metric else None,
                    )
                sections.append(
                    {
                        "board": board,
                        "entries": entries.to_dict("records"),
                        "plot": plot,
                        "current": board_runs[board_runs["scored"]]
                        .sort_values(["optimizer", "seed"])
                        .to_dict("records"),
                        "trials": _ranked_trials(trials, studies),
                        "studies": studies,
                        "sgd_refs": sorted({r for r in entries["sgd_ref"].dropna()}) if len(entries) else [],
                    }
                )
            slug = fmt.slug(name)
            self.render(
                "suite.html",
                f"suites/{slug}.html",
                suite=info,
                sections=sections,
                n_runs=len(runs),
                run_pages=self.run_index_pages(name, runs),
                export=f"{slug}",
            )
            self.write_table(
                f"suites/{slug}",
                _entries_export(
                    pd.concat([pd.DataFrame(s["entries"]) for s in sections if s["entries"]])
                    if any(s["entries"] for s in sections)
                    else None
                ),
            )
            listing.append(
                {
                    "info": info,
                    "runs": len(runs),
                    "optimizers": int(runs["optimizer"].nunique()),
                    "stale": int(runs["stale"].sum()),
                    "failed": int(runs["failed"].sum()),
                }
            )
        self.render("suites.html", "suites.html", suites=listing)

    def run_index_pages(self, suite: str, runs: pd.DataFrame) -> list[str]:
        """Every run of the suite, newest first, in pages of :data:`RUNS_PER_PAGE` (written by
        a worker: the run frame is shared with it)."""
        slug = fmt.slug(suite)
        n_pages = max(1, math.ceil(len(runs) / RUNS_PER_PAGE))
        names = [f"suites/{slug}-runs{'' if i == 0 else f'-{i + 1}'}.html" for i in range(n_pages)]
        for i in range(n_pages):
            self.submit(("_write_run_index", (suite, names, i), {}))
        self.pages += len(names)
        return names

    def _write_run_index(self, suite: str, names: list[str], i: int) -> tuple[int, int]:
        runs = self.data.runs
        ordered = runs[runs["suite"] == suite].sort_values("id", ascending=False)
        chunk = ordered.iloc[i * RUNS_PER_PAGE : (i + 1) * RUNS_PER_PAGE]
        self.render(
            "runs_index.html",
            names[i],
            counted=True,
            suite=suite,
            suite_page=f"suites/{fmt.slug(suite)}.html",
            runs=[SimpleNamespace(**r) for r in chunk.to_dict("records")],
            pages=[(n, j + 1) for j, n in enumerate(names)],
            current=names[i],
            total=len(ordered),
        )
        return 1, 0

    # ----------------------------------------------------------------- optimizers
    def write_optimizers(self) -> None:
        data = self.data
        approx = self.approx()
        listing = []
        for opt in self.optimizers:
            info = data.methods.get(opt)
            results = views.optimizer_results(data, opt)
            runs = data.runs[data.runs["optimizer"] == opt] if len(data.runs) else data.runs
            configs = (
                runs.groupby(["config", "config_label"]).size().reset_index(name="runs").to_dict("records")
                if len(runs)
                else []
            )
            approx_rows = []
            for v in approx:
                for row in v["table"]:
                    if row["method"] == opt:
                        approx_rows.append({"suite": v["suite"], "backend": v["backend"], "row": row, "view": v})
            self.render(
                "optimizer.html",
                f"optimizers/{fmt.slug(opt)}.html",
                name=opt,
                info=info,
                results=results,
                configs=configs,
                approx=approx_rows,
                n_runs=len(runs),
                status_counts=runs["status"].value_counts().to_dict() if len(runs) else {},
            )
            listing.append({"name": opt, "info": info, "runs": len(runs), "results": results})
        self.render("optimizers.html", "optimizers.html", optimizers=listing)
        # Every default with where it comes from (docs/defaults.md): paper, library or held-out.
        cards = {
            opt: {
                h.name: {"default": h.default, "provenance": h.provenance or None, "source": h.source or None}
                for h in info.hyperparams
            }
            for opt in self.optimizers
            if (info := data.methods.get(opt)) is not None
        }
        (self.out / "data").mkdir(parents=True, exist_ok=True)
        text = json.dumps(cards, indent=1, sort_keys=True, default=str, allow_nan=False)
        (self.out / "data" / "optimizers.json").write_text(text + "\n", encoding="utf-8")

    # ----------------------------------------------------------------- approximation quality
    def write_approx(self) -> None:
        approx = self.approx()
        for v in approx:
            base = f"{fmt.slug(v['suite'])}-{fmt.slug(v['backend'])}"
            v["plot"] = v["sweep_plot"] = None
            if len(v["stages"]) and v["stages"]["median"].notna().any():
                v["plot"] = self.plot("approx_stages", f"plots/approx-{base}.svg", v["stages"], self.style)
            if len(v["sweeps"]):
                v["sweep_plot"] = self.plot("damping_sweep", f"plots/damping-{base}.svg", v["sweeps"], self.style)
        self.render("approx.html", "approx.html", views=approx)
        rows = []
        for v in approx:
            for r in v["stages"].to_dict("records"):
                rows.append({"suite": v["suite"], "backend": v["backend"], **r})
        self.write_table("data/approx", pd.DataFrame(rows))

    # ----------------------------------------------------------------- history
    def write_history(self) -> None:
        view = views.history_view(self.data)
        sparks: dict[tuple[str, str, str, str, str], Markup] = {}
        records = []
        for machine in view["machines"] if view is not None else []:
            sweeps = list(machine["nightly"].itertuples(index=False))
            for suite, rows in machine["suites"].items():
                for row in rows:
                    for metric, _ in views.HISTORY_METRICS:
                        key = (machine["hardware"], suite, row["optimizer"], row["backend"], metric)
                        sparks[key] = svg.sparkline(row["values"][metric], row["marks"][metric])
                    for i, sweep in enumerate(sweeps):
                        records.append(
                            {
                                "hardware": machine["hardware"],
                                "suite": suite,
                                "optimizer": row["optimizer"],
                                "backend": row["backend"],
                                "sweep_id": int(sweep.id),
                                "sweep": sweep.name,
                                "started_at": sweep.started_at,
                                "time_to_target_s": row["values"]["ttt"][i],
                                "step_time_median_s": row["values"]["step_time"][i],
                                "peak_memory_bytes": row["values"]["memory"][i],
                                "flagged": any(row["marks"][m][i] for m, _ in views.HISTORY_METRICS),
                            }
                        )
        self.render("history.html", "history.html", view=view, sparks=sparks, metrics=views.HISTORY_METRICS)
        self.write_table("data/history", pd.DataFrame(records))

    # ----------------------------------------------------------------- runs
    def write_runs(self) -> None:
        """Schedule the run pages in chunks (rendered by :meth:`_write_run_pages`)."""
        ids = [int(i) for i in self.data.runs["id"]] if len(self.data.runs) else []
        if not ids:
            return
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        envs = (
            {int(k): v for k, v in self.data.environments.to_dict("index").items()}
            if len(self.data.environments)
            else {}
        )
        env_template = self.env.get_template("environment.html")
        # Rendered (and escaped) once per environment, not once per run.
        self._env_html = {k: Markup(env_template.render(env=v, DASH=fmt.DASH)) for k, v in envs.items()}
        self._sweeps = {int(r["id"]): r for r in self.data.sweeps.to_dict("records")} if len(self.data.sweeps) else {}
        # Attribute access is Jinja's fast path (a dict costs a failed getattr per lookup).
        self._run_records = [SimpleNamespace(**r) for r in self.data.runs.to_dict("records")]
        for start in range(0, len(ids), RUN_CHUNK):
            self.submit(("_write_run_pages", (start, start + RUN_CHUNK), {}))
        self.pages += len(ids)

    def _write_run_pages(self, start: int, stop: int) -> tuple[int, int]:
        template = self.env.get_template("run.html")
        common = dict(self.common, root="../")
        records = self._run_records[start:stop]
        series = self.data.series_for([int(r.id) for r in records])
        for run in records:
            rid = int(run.id)
            info = self.data.suites.get(run.suite)
            val_metric = run.val_metric or (info.val_metric if info else "val_accuracy")
            page = template.render(
                page=f"runs/{rid}.html",
                run=run,
                suite=info,
                charts=self.run_charts(series, rid, val_metric, info),
                env_html=self._env_html.get(int(run.environment_id)) if _present(run.environment_id) else None,
                sweep=self._sweeps.get(int(run.sweep_id)) if _present(run.sweep_id) else None,
                spec_json=json.dumps(run.spec, indent=1, sort_keys=True, default=str) if run.spec else "none stored",
                hparams=sorted(run.hparams.items()) if isinstance(run.hparams, dict) else [],
                final_metrics=sorted(run.final_metrics.items()) if isinstance(run.final_metrics, dict) else [],
                **common,
            )
            (self.out / "runs" / f"{rid}.html").write_text(page, encoding="utf-8")
        return stop - start, 0

    def run_charts(self, m: site_data.MetricSeries, rid: int, val_metric: str, info: SuiteInfo | None) -> list[Markup]:
        """Train loss (batch and evaluation) and the validation metric against steps, with the
        steady-state time at the first and last step; optimizer statistics (``opt_*``)."""
        target = info.target_value if info and info.target_metric == val_metric else None
        bs, bt, bv = m.get(rid, site_data.BATCH_LOSS)
        es, et, ev = m.get(rid, site_data.TRAIN_LOSS)
        vs, vt, vv = m.get(rid, val_metric)
        steps = np.concatenate([bs, es, vs])
        times = np.concatenate([bt, et, vt])
        notes = None
        if steps.size:
            notes = (fmt.seconds(times[np.argmin(steps)]), fmt.seconds(times[np.argmax(steps)]))
        loss_series = []
        if bs.size:
            loss_series.append(svg.Series(bs, bv, "batch", "batch"))
        if es.size:
            loss_series.append(svg.Series(es, ev, "s1", "evaluation"))
        positive = [a[np.isfinite(a)] for a in (bv, ev)]
        logy = all(bool(np.all(a > 0)) for a in positive) and any(a.size for a in positive)
        charts = [svg.chart(loss_series, title="train loss", xlabel="step (time)", logy=logy, x_notes=notes)]
        if vs.size:
            charts.append(
                svg.chart(
                    [svg.Series(vs, vv, "s2", "")], title=val_metric, xlabel="step (time)", hline=target, x_notes=notes
                )
            )
        for name in m.names(rid):
            if name.startswith("opt_"):
                s, _, v = m.get(rid, name)
                charts.append(svg.chart([svg.Series(s, v, "s3", "")], title=name, xlabel="step", width=240, height=130))
        return charts

    # ----------------------------------------------------------------- exports
    def write_table(self, stem: str, frame: pd.DataFrame | None) -> None:
        """``stem.csv`` and ``stem.json`` (see :mod:`leaderboard.export`)."""
        export.write_table(frame, self.out / stem)

    def _export_runs(self) -> tuple[int, int]:
        runs = self.data.runs
        cols = [c for c in runs.columns if c != "board" and not c.endswith("_text")]
        self.write_table("data/runs", runs[cols] if len(runs) else pd.DataFrame(columns=cols))
        return 0, 0

    def write_exports(self) -> None:
        data = self.data
        self.submit(("_export_runs", (), {}))
        self.write_table("data/entries", _entries_export(data.entries))
        scores, matrix = [], []
        for board in data.boards:
            view = self.board_view(board)
            for row in view["rows"]:
                scores.append(
                    {
                        "track": board.track,
                        "backend": board.backend,
                        "hardware": board.hardware,
                        "optimizer": row["optimizer"],
                        "score_time": row["score_time"],
                        "score_steps": row["score_steps"],
                        "suites_reached": row["reached"],
                        "suites": row["suites"],
                    }
                )
                for cell in row["cells"]:
                    matrix.append(
                        {
                            "track": board.track,
                            "backend": board.backend,
                            "hardware": board.hardware,
                            "optimizer": row["optimizer"],
                            "suite": cell["suite"],
                            "time_to_target_s": cell.get("ttt"),
                            "steps_to_target": cell.get("stt"),
                            "ratio_to_best": cell.get("ratio"),
                            "steps_ratio_to_best": cell.get("step_ratio"),
                            "status": cell["status"] or cell["css"],
                        }
                    )
        self.write_table("data/scores", pd.DataFrame(scores))
        self.write_table("data/matrix", pd.DataFrame(matrix))
        envs = data.environments.drop(columns=["fingerprint"], errors="ignore") if len(data.environments) else None
        self.write_table("data/environments", envs)
        self.render(
            "data.html",
            "data.html",
            environments=data.environments.to_dict("records") if len(data.environments) else [],
            tables=(
                ("runs", "every run: spec, status, summary figures and the derived ranking columns"),
                ("entries", "per board, suite, optimizer and configuration: medians over seeds"),
                ("scores", "per board and optimizer: the performance-profile scores"),
                ("matrix", "per board, optimizer and suite: time-to-target and ratio to the best"),
                ("approx", "γ/γ_SGD per suite, method and checkpoint"),
                ("history", "nightly medians per suite, optimizer and backend"),
                ("tunability", "per backend, device and optimizer: untuned vs tuned score on the same suites"),
                ("environments", "the machines and software the runs used"),
            ),
        )
        if not (self.out / "data" / "approx.json").exists():
            self.write_table("data/approx", None)


def _favicon_ico(rgb: tuple[int, int, int] = (0x0B, 0x53, 0x94)) -> bytes:
    """A 16x16 single-colour ICO (BMP inside), written at build time: no binary in the package."""
    size = 16
    pixels = bytes([rgb[2], rgb[1], rgb[0], 255]) * (size * size)
    mask = bytes(4 * size)  # 1-bit AND mask, rows padded to 32 bits
    header = struct.pack("<IiiHHIIiiII", 40, size, 2 * size, 1, 32, 0, len(pixels) + len(mask), 0, 0, 0, 0)
    image = header + pixels + mask
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(image), 22) + image


def _ranked_trials(trials: pd.DataFrame, studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trial rows with their rank in their study and whether the board scores their configuration."""
    by_opt = {s["optimizer"]: s for s in studies}
    out = []
    for r in trials.sort_values(["optimizer", "trial", "id"]).to_dict("records"):
        study = by_opt.get(r["optimizer"], {})
        trial = int(r["trial"]) if _present(r["trial"]) else None
        newest = study.get("trial_ids", {}).get(trial) == int(r["id"])
        r["rank"] = study.get("rank", {}).get(trial) if newest else None
        r["scored_config"] = study.get("chosen_config") is not None and r["config"] == study.get("chosen_config")
        out.append(r)
    return out


def _present(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _entries_export(entries: pd.DataFrame | None) -> pd.DataFrame | None:
    if entries is None or entries.empty:
        return entries
    keep = [
        c
        for c in (
            "track",
            "backend",
            "hardware",
            "suite",
            "optimizer",
            "config",
            "config_label",
            "stale",
            "chosen",
            "configs",
            "runs",
            "seeds",
            "reached",
            "status_counts",
            "ttt",
            "ttt_min",
            "ttt_max",
            "stt",
            "ratio",
            "final_train_loss",
            "best_val_metric",
            "step_time",
            "sgd_ratio",
            "sgd_ref",
            "peak_memory",
            "memory_kind",
            "compile_time",
            "passes",
            "hparams",
            "run_ids",
        )
        if c in entries.columns
    ]
    return entries[keep].rename(
        columns={
            "ttt": "time_to_target_s",
            "ttt_min": "time_to_target_min_s",
            "ttt_max": "time_to_target_max_s",
            "stt": "steps_to_target",
            "ratio": "ratio_to_best",
            "step_time": "step_time_median_s",
        }
    )
