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

import multiprocessing
import os
import shutil
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from db.store import Store
from leaderboard import data as site_data
from leaderboard.catalogue import MethodInfo, SuiteInfo
from leaderboard.errors import SiteError
from leaderboard.pages import approx as approx_page
from leaderboard.pages import claims as claims_page
from leaderboard.pages import exports as exports_page
from leaderboard.pages import history as history_page
from leaderboard.pages import optimizers as optimizers_page
from leaderboard.pages import overview as overview_page
from leaderboard.pages import runs as run_pages
from leaderboard.pages import suites as suite_pages
from leaderboard.pages import tunability as tunability_page
from leaderboard.pages.context import BuildContext

__all__ = ["MARKER", "BuildReport", "SiteError", "build"]

MARKER = ".ngbench-site"
STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class BuildReport:
    out: Path
    pages: int
    plots: int
    runs: int
    seconds: float
    timings: Mapping[str, float]


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
    version) come from the CLI, which may import the registry; see :mod:`leaderboard.ranking`.
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
    _remove_stale_staging(out)
    staging = out.parent / f".{out.name}.build-{_HOST}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        ctx = BuildContext(data, staging, timings, jobs=_jobs(jobs))
        write_pages(ctx)
        (staging / MARKER).write_text("built by ngbench site build\n")
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildReport(
        out=out,
        pages=ctx.pages,
        plots=ctx.plots,
        runs=len(data.runs),
        seconds=time.perf_counter() - t0,
        timings=dict(timings),
    )


def write_pages(ctx: BuildContext) -> None:
    """Every page, in order: the static assets, the run pages (scheduled first, so that the
    workers write them while this process renders the rest), then each page of
    :mod:`leaderboard.pages`, and wait for the deferred tasks."""
    shutil.copytree(STATIC, ctx.out / "static")
    # Browsers ask any HTTP host for /favicon.ico (e.g. when a JSON export is opened).
    (ctx.out / "favicon.ico").write_bytes(_favicon_ico())
    try:
        ctx.timed("runs", lambda: run_pages.schedule(ctx))
        ctx.start_pool()
        ctx.timed("overview", lambda: overview_page.write(ctx))
        ctx.timed("suites", lambda: suite_pages.write(ctx))
        ctx.timed("optimizers", lambda: optimizers_page.write(ctx))
        ctx.timed("approx", lambda: approx_page.write(ctx))
        ctx.timed("history", lambda: history_page.write(ctx))
        ctx.timed("tunability", lambda: tunability_page.write(ctx))
        ctx.timed("claims", lambda: claims_page.write(ctx))
        ctx.timed("exports", lambda: exports_page.write(ctx))
        ctx.timed("waiting for plots and run pages", ctx.finish_tasks)
    except BaseException:
        ctx.abort()
        raise


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
    old = out.parent / f".{out.name}.old-{_HOST}-{os.getpid()}"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


_HOST = socket.gethostname().replace("/", "_")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(out: Path) -> list[Path]:
    """Remove the ``.<site>.build-<host>-<pid>`` (and ``.old-``) folders that builds killed on
    this host left next to ``out``; a killed swap's previous site is put back if ``out`` is gone.
    Folders of builds still running, or of other hosts (a shared file system), are left alone."""
    removed: list[Path] = []
    for kind in ("build", "old"):
        for path in sorted(out.parent.glob(f".{out.name}.{kind}-{_HOST}-*")):
            pid_text = path.name.rsplit("-", 1)[1]
            if not pid_text.isdigit() or int(pid_text) == os.getpid() or _process_exists(int(pid_text)):
                continue
            if kind == "old" and not out.exists() and (path / MARKER).exists():
                path.rename(out)  # killed between the two renames of _swap: the old site is the site
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _favicon_ico(rgb: tuple[int, int, int] = (0x0B, 0x53, 0x94)) -> bytes:
    """A 16x16 single-colour ICO (BMP inside), written at build time: no binary in the package."""
    size = 16
    pixels = bytes([rgb[2], rgb[1], rgb[0], 255]) * (size * size)
    mask = bytes(4 * size)  # 1-bit AND mask, rows padded to 32 bits
    header = struct.pack("<IiiHHIIiiII", 40, size, 2 * size, 1, 32, 0, len(pixels) + len(mask), 0, 0, 0, 0)
    image = header + pixels + mask
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(image), 22) + image
