"""The state of one site build that every page writer shares.

:class:`BuildContext` holds the loaded data, the output directory, the template environment
and the context every page gets (build time, database label, boards), memoises the views
several pages show (board scores, approximation quality, tunability) and schedules the slow
work (matplotlib figures, run pages, the runs export) as deferred tasks.

Deferred tasks are ``(function, args, kwargs)`` with a module-level ``function(ctx, *args,
**kwargs)``. With more than one job they run in forked worker processes, which inherit the
context of the build in progress (:data:`_CONTEXT`) copy-on-write instead of having the data
pickled to each task; with one job they run in this process at the end of the build.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from leaderboard import export, plots, scoring
from leaderboard.data import SiteData
from leaderboard.pages.templating import date_text, db_label, environment
from leaderboard.ranking import Board
from leaderboard.views import approx_views, board_scores, optimizer_order, tunability_views

Task = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

#: The context of the build in progress, inherited by forked worker processes.
_CONTEXT: BuildContext | None = None


def _run_task(task: Task) -> None:
    assert _CONTEXT is not None
    function, args, kwargs = task
    function(_CONTEXT, *args, **kwargs)


def _draw_plot(ctx: BuildContext, kind: str, path: str, *args: Any, **kwargs: Any) -> None:
    getattr(plots, kind)(*args, path=ctx.out / path, **kwargs)


class BuildContext:
    """One build: where it writes, what it renders with, and its deferred tasks."""

    def __init__(self, data: SiteData, out: Path, timings: dict[str, float], jobs: int = 1) -> None:
        self.data = data
        self.out = out
        self.timings = timings
        self.jobs = jobs
        #: Deferred work not yet handed to a worker.
        self.tasks: list[Task] = []
        #: What deferred tasks of a page read in the workers (set before the pool forks).
        self.shared: dict[str, Any] = {}
        self._board_views: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._approx: list[dict[str, Any]] | None = None
        self._tunability: list[dict[str, Any]] | None = None
        self._pool: Any = None
        self._pending: list[Any] = []
        self.env = environment()
        #: Pages and plots written (or scheduled), for the build report.
        self.pages = 0
        self.plots = 0
        self.optimizers = optimizer_order(data)
        self.style = plots.styles(self.optimizers)
        self.board_pages = {b.key: f"boards/{b.slug}.html" for b in data.boards}
        self.common = {
            "built": date_text(data.built_at),
            "db": db_label(data.db_url) if data.db_url else "",
            "boards": data.boards,
            "tau_max": scoring.TAU_MAX,
        }

    # ----------------------------------------------------------------- shared views
    def board_view(self, board: Board) -> dict[str, Any]:
        """:func:`leaderboard.views.board_scores` of ``board``, computed once per build."""
        if board.key not in self._board_views:
            self._board_views[board.key] = board_scores(self.data, board)
        return self._board_views[board.key]

    def approx(self) -> list[dict[str, Any]]:
        """:func:`leaderboard.views.approx_views`, computed once per build."""
        if self._approx is None:
            self._approx = approx_views(self.data)
        return self._approx

    def tunability(self) -> list[dict[str, Any]]:
        """:func:`leaderboard.views.tunability_views`, computed once per build."""
        if self._tunability is None:
            self._tunability = tunability_views(self.data)
        return self._tunability

    # ----------------------------------------------------------------- writing
    def render(self, template: str, path: str, *, counted: bool = False, **context: Any) -> None:
        """Write one page; ``counted``: already counted when it was scheduled (a task)."""
        depth = path.count("/")
        page = self.env.get_template(template).render(root="../" * depth, page=path, **self.common, **context)
        target = self.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
        if not counted:
            self.pages += 1

    def write_table(self, stem: str, frame: pd.DataFrame | None) -> None:
        """``stem.csv`` and ``stem.json`` (see :mod:`leaderboard.export`)."""
        export.write_table(frame, self.out / stem)

    def plot(self, kind: str, path: str, *args: Any, **kwargs: Any) -> str:
        """Schedule the :mod:`leaderboard.plots` figure ``kind``; returns its site path (the
        page can link it now)."""
        self.submit(_draw_plot, kind, path, *args, **kwargs)
        self.plots += 1
        return path

    def timed(self, name: str, fn: Callable[[], Any]) -> None:
        tick = time.perf_counter()
        fn()
        self.timings[name] = time.perf_counter() - tick

    # ----------------------------------------------------------------- deferred tasks
    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``function(ctx, *args, **kwargs)`` in a worker when the pool is up, else later in
        this process."""
        task: Task = (function, args, kwargs)
        if self._pool is not None:
            self._pending.append(self._pool.apply_async(_run_task, (task,)))
        else:
            self.tasks.append(task)

    def start_pool(self) -> None:
        """Fork the workers now, so that they write run pages while this process writes the
        rest; they inherit the loaded data (copy-on-write) through :data:`_CONTEXT`."""
        global _CONTEXT
        if self.jobs <= 1:
            return
        _CONTEXT = self
        self._pool = multiprocessing.get_context("fork").Pool(self.jobs)
        tasks, self.tasks = self.tasks, []
        for function, args, kwargs in tasks:
            self.submit(function, *args, **kwargs)

    def finish_tasks(self) -> None:
        """Wait for the workers (re-raising their errors), or run the tasks here."""
        global _CONTEXT
        if self._pool is None:
            tasks, self.tasks = self.tasks, []
            for function, args, kwargs in tasks:
                function(self, *args, **kwargs)
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
            _CONTEXT = None

    def abort(self) -> None:
        """Stop the workers of a failed build."""
        global _CONTEXT
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        _CONTEXT = None
