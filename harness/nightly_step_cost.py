"""The step-cost table of a nightly: a child process measures it, the nightly's parent stores it.

A sweep file's ``[step_cost]`` (:class:`harness.sweep.schema.StepCostSettings`) or ``ngbench
nightly --step-cost`` asks the nightly to measure the step-cost table after its runs, one
table per backend:

1. **Measure in a child without credentials.** The table runs adapter code, so it is measured
   where a sweep's workers are: in a new interpreter, ``python -m benchmarks.step_cost
   --backend B ... --json PATH``, started from the checkout the harness runs from, in its own
   process group (killed with it at ``timeout_s`` or when the parent dies), with the workers'
   scrubbed environment (no database URL, no credentials: ``harness.worker.scrubbing``),
   ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to ``threads`` and JAX and torch on the CPU. It
   writes the table as JSON into a private temporary directory.
2. **Validate and store in the parent.** The parent reads the document, checks every row
   (names of the measured backend, problems and adapters, numbers or ``null``, SGD's reference
   row per problem) and appends the table in one transaction through
   :func:`db.step_costs.save_step_costs`, tagged as ``--store`` tags it: a description of the
   machine (from the nightly's own environment record), the threads, the rounds and the git
   commit of the nightly.
3. **Never lose the nightly.** A child that fails, times out, or writes a table that does not
   validate stores nothing of that backend; the reason (with the tail of the child's stderr) is
   recorded in the report's ``step_cost`` section and printed as a warning, and the nightly
   goes on to its report and site. Ctrl-C kills the child and ends the measurement; what was
   stored stays, and the section says ``interrupted``.

Why a child running a module of the checkout: ``benchmarks/`` is the asv suite, not part of the
installed package, and ``harness`` never imports it (import rules). Running it as a module
keeps one implementation of the protocol (what ``python -m benchmarks.step_cost`` prints is
what the nightly stores), measures the commit the nightly ran, and the separate process is
needed anyway to keep credentials from adapter code. A nightly installed without a checkout
refuses ``step_cost`` before any run starts (:func:`checkout_problem`).

**Efficiency changes.** Before storing, the newest stored row of every (backend, problem,
adapter) is the baseline when it was measured on the same machine with the same threads (the
machine description up to its framework versions; another machine gives no item). For each adapter
the change ``d = log(efficiency_now / efficiency_before)`` (efficiency = median step / floor) is
flagged ``slowdown``/``speedup`` when ``|d|`` exceeds ``max(log(1 + min_rel), k * sigma)``,
where ``sigma = sqrt(se_now^2 + se_before^2)`` and ``se = 1.2533 * s / sqrt(rounds)`` is the
standard error of a median with ``s = (log p90 - log p10) / 2.5631`` the spread of that
measurement's steps (normal quantiles). These items are reported; they do not count as the
runs' regressions.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.methods import BUILTIN_METHODS, card
from db.step_costs import latest_step_costs, save_step_costs
from db.store import Store
from harness import external
from harness.environment import REPO_ROOT
from harness.sweep.schema import StepCostSettings
from harness.worker.processes import kill_group, set_parent_death_signal
from harness.worker.scrubbing import worker_environ

#: The module that measures the table, run from the checkout.
MODULE = "benchmarks.step_cost"
#: The ``--json`` document's version (``benchmarks.step_cost_table.JSON_FORMAT``).
JSON_FORMAT = "ngbench-step-cost/1"
#: Characters of the child's stderr kept in the report.
STDERR_TAIL = 2000
#: A table with more rows than this is refused (adapters x presets x problems is far smaller).
MAX_ROWS = 1000
#: Normal quantile of p90 minus that of p10, in standard deviations.
P10_P90_SIGMAS = 2.5631
#: Standard error of a sample median relative to sigma / sqrt(n) (normal data).
MEDIAN_SE = 1.2533
_NUMBERS = ("median_s", "p10_s", "p90_s", "compile_s", "ratio_to_sgd", "floor_s", "efficiency")


class TableError(ValueError):
    """A child's table that cannot be stored (the message says why, on one line)."""


@dataclass(frozen=True)
class ChildExit:
    """How a measuring child ended: exit code (``None`` when killed at its time limit), the tail of
    its stderr and its wall-clock time."""

    returncode: int | None
    stderr: str
    wall_s: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def checkout_problem(root: Path = REPO_ROOT) -> str | None:
    """Why the nightly cannot measure the table from ``root`` (``None`` when it can)."""
    if (root / "benchmarks" / "step_cost.py").is_file():
        return None
    return (
        f"step_cost: the measurement is benchmarks/step_cost.py of a source checkout, and {root} has none "
        "(benchmarks/ is not installed with the package): run the nightly from a checkout (pip install -e .)"
    )


def settings_for(configured: StepCostSettings | None, flag: bool | None) -> StepCostSettings | None:
    """The settings a nightly measures with: the sweep file's, switched on (defaults) or off by
    ``--step-cost``/``--no-step-cost``."""
    if flag is False:
        return None
    if flag is True and configured is None:
        return StepCostSettings()
    return configured


def adapters_on(backend: str, adapters: Sequence[str] | None) -> list[str] | None:
    """The listed adapters (``adapter`` or ``adapter:preset``) that ``backend`` has; ``None``
    keeps the table's default (every adapter of the backend)."""
    if adapters is None:
        return None
    plugins = set(external.entry_point_names(backend))

    def has(name: str) -> bool:
        adapter = name.partition(":")[0]
        return adapter in plugins or (adapter in BUILTIN_METHODS and backend in card(adapter).backends)

    return [a for a in adapters if has(a)]


def command(settings: StepCostSettings, backend: str, adapters: list[str] | None, json_path: Path) -> list[str]:
    """The child's command line."""
    argv = [sys.executable, "-m", MODULE, "--backend", backend, "--problem", *settings.problems]
    argv += ["--rounds", str(settings.rounds), "--warmup", str(settings.warmup), "--threads", str(settings.threads)]
    if adapters is not None:
        argv += ["--adapter", *adapters]
    return [*argv, "--json", str(json_path)]


def child_environ(threads: int, root: Path = REPO_ROOT) -> dict[str, str]:
    """The workers' scrubbed environment (no database URL, no credentials), one BLAS/OpenMP
    thread setting, and the CPU only."""
    extra = {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "JAX_PLATFORMS": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
    }
    return worker_environ(extra, cwd=str(root))


def run_child(argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> ChildExit:
    """Run ``argv`` in its own process group, killed at ``timeout_s`` (or with this process)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            preexec_fn=set_parent_death_signal,
        )
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:  # a timeout, or Ctrl-C in the parent: the child and its own children go too
            if proc.poll() is None:
                kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    return ChildExit(code, text[-STDERR_TAIL:].strip(), time.monotonic() - start)


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _row_problem(row: Any, backend: str, problems: Sequence[str]) -> str | None:
    if not isinstance(row, dict):
        return f"a row is not an object: {str(row)[:80]!r}"
    if row.get("backend") != backend or row.get("problem") not in problems:
        return f"a row of another backend or problem: {row.get('backend')!r}, {row.get('problem')!r}"
    for key, limit in (("adapter", 128), ("status", 4000)):
        if not isinstance(row.get(key), str) or not 0 < len(row[key]) <= limit:
            return f"row {row.get('adapter')!r}: {key} must be a string of at most {limit} characters"
    params = row.get("params")
    if params is not None and (isinstance(params, bool) or not isinstance(params, int) or params < 0):
        return f"row {row['adapter']!r}: params must be a non-negative integer"
    for key in _NUMBERS:
        if not _number_or_null(row.get(key)):
            return f"row {row['adapter']!r}: {key} must be a number or null"
    passes = row.get("passes", {})
    if not isinstance(passes, dict) or not all(map(_number_or_null, passes.values())):
        return f"row {row['adapter']!r}: passes must map names to numbers"
    return None


def read_table(path: Path, backend: str, problems: Sequence[str], adapters: Sequence[str] | None) -> list[dict]:
    """The rows of the child's ``--json`` document, validated (raises :class:`TableError`)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TableError("the child wrote no table") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableError(f"the child's table is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != JSON_FORMAT:
        raise TableError(f"the child's table is not a {JSON_FORMAT} document")
    rows = document.get("rows")
    if not isinstance(rows, list) or not 0 < len(rows) <= MAX_ROWS:
        raise TableError(f"the child's table must have 1 to {MAX_ROWS} rows")
    for row in rows:
        if (problem := _row_problem(row, backend, problems)) is not None:
            raise TableError(problem)
    seen = {(r["problem"], r["adapter"]) for r in rows}
    if len(seen) != len(rows):
        raise TableError("the child's table lists an adapter twice")
    expected = ["sgd", *(adapters or [])]
    missing = [f"{a} on {p}" for p in problems for a in expected if (p, a) not in seen]
    if missing:
        raise TableError(f"the child's table lacks {', '.join(missing)}")
    return rows


def machine_description(environment: Mapping[str, Any], backend: str, threads: int) -> str:
    """Where a table was measured, in words, as ``benchmarks.step_cost --store`` writes it (host,
    CPU, cores, threads; framework versions), from the nightly's environment record."""
    names = ("jax", "jaxlib") if backend == "jax" else ("torch",)
    versions = ", ".join(f"{n} {environment.get(n)}" for n in names if environment.get(n))
    return (
        f"{environment.get('hostname')}: {environment.get('cpu')} ({environment.get('cpu_count')} cores), "
        f"{threads} thread(s); {versions}"
    )


def _positive(value: Any) -> float | None:
    """``value`` if it is a finite number above zero, else ``None`` (a stored figure may be
    ``None`` or NaN)."""
    ok = isinstance(value, int | float) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def _median_se(row: Mapping[str, Any]) -> float:
    """Standard error of the log of a stored row's median step: ``1.2533 * s / sqrt(rounds)`` with
    ``s = (log p90 - log p10) / 2.5631``; 0 when the row lacks its spread or rounds."""
    p10, p90, rounds = (_positive(row.get(k)) for k in ("p10_step_s", "p90_step_s", "rounds"))
    if p10 is None or p90 is None or rounds is None or p90 < p10:
        return 0.0
    return MEDIAN_SE * (math.log(p90) - math.log(p10)) / P10_P90_SIGMAS / math.sqrt(rounds)


def _same_machine(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same host, CPU, cores and threads: the machine description before its framework versions."""
    return str(a.get("machine")).split(";")[0] == str(b.get("machine")).split(";")[0]


def _ratio_text(value: Any) -> str:
    number = _positive(value)
    return "-" if number is None else f"{number:.2f}"


def efficiency_items(
    before: list[dict[str, Any]], after: list[dict[str, Any]], *, k: float, min_rel: float
) -> list[dict[str, Any]]:
    """Efficiency changes (``slowdown``/``speedup``/``unchanged``) from the stored rows ``before``
    to those ``after`` (``latest_step_costs`` records) of the same (backend, problem, adapter)
    measured on the same machine; see the module docstring for the band."""
    old = {(r["backend"], r["problem"], r["adapter"]): r for r in before}
    items = []
    for row in after:
        prev = old.get((row["backend"], row["problem"], row["adapter"]))
        if prev is None or not _same_machine(prev, row):
            continue
        a, b = _positive(prev.get("efficiency")), _positive(row.get("efficiency"))
        if a is None or b is None:
            continue
        band = max(math.log1p(min_rel), k * math.hypot(_median_se(prev), _median_se(row)))
        d = math.log(b / a)
        ratios = f"{_ratio_text(prev.get('ratio_to_sgd'))} -> {_ratio_text(row.get('ratio_to_sgd'))}"
        detail = f"step / floor {a:.2f} -> {b:.2f}; ratio to SGD {ratios}; band ±{100 * math.expm1(band):.1f}%"
        items.append(
            {
                "backend": row["backend"],
                "problem": row["problem"],
                "adapter": row["adapter"],
                "metric": "efficiency",
                "previous": a,
                "current": b,
                "ratio": b / a,
                "threshold": math.expm1(band),
                "flag": ("slowdown" if d > 0 else "speedup") if abs(d) > band else "unchanged",
                "detail": detail,
            }
        )
    return items


def _records(store: Store) -> list[dict[str, Any]]:
    frame = latest_step_costs(store)
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def measure_backend(
    store: Store,
    settings: StepCostSettings,
    backend: str,
    environment: Mapping[str, Any],
    runner: Callable[[list[str], dict[str, str], Path, float], ChildExit],
) -> dict[str, Any]:
    """Measure and store one backend's table; its entry of the report's ``tables``."""
    adapters = adapters_on(backend, settings.adapters)
    if adapters == []:
        return {"backend": backend, "status": "skipped", "detail": f"no listed adapter has a {backend} adapter"}
    with tempfile.TemporaryDirectory(prefix="ngbench-step-cost-") as folder:
        path = Path(folder) / "table.json"
        argv = command(settings, backend, adapters, path)
        try:
            child = runner(argv, child_environ(settings.threads), REPO_ROOT, settings.timeout_s)
        except OSError as exc:  # no interpreter, no checkout, no process slots
            return {"backend": backend, "status": "failed", "detail": f"the child did not start: {exc}"}
        entry: dict[str, Any] = {"backend": backend, "wall_s": round(child.wall_s, 1)}
        if child.returncode != 0:
            why = f"timed out after {settings.timeout_s:g} s" if child.timed_out else f"exit code {child.returncode}"
            return {**entry, "status": "failed", "detail": f"{why}; stderr: {child.stderr or '(empty)'}"}
        try:
            rows = read_table(path, backend, settings.problems, adapters)
        except TableError as exc:
            return {**entry, "status": "failed", "detail": str(exc)}
    written = save_step_costs(
        store,
        rows,
        machine=machine_description(environment, backend, settings.threads),
        threads=settings.threads,
        git_commit=environment.get("git_commit"),
        git_dirty=environment.get("git_dirty"),
        rounds=settings.rounds,
    )
    failed = sorted({r["adapter"] for r in rows if r["status"] != "ok"})
    return {**entry, "status": "stored", "rows": written, "failed_adapters": failed}


def measure_and_store(
    store: Store,
    settings: StepCostSettings,
    backends: Sequence[str],
    environment: Mapping[str, Any],
    *,
    k: float = 3.0,
    min_rel: float = 0.05,
    runner: Callable[[list[str], dict[str, str], Path, float], ChildExit] | None = None,
) -> dict[str, Any]:
    """Measure and store the table of every backend (``settings.backends``, else ``backends``);
    the report's ``step_cost`` section: ``status`` (:func:`section_status`), ``settings``, one
    entry per backend in ``tables``, and the efficiency ``items``. Ctrl-C stops the measurement
    (the child is killed, its backend stores nothing) and returns the section so far."""
    before = _records(store)
    tables = []
    for backend in settings.backends or backends:
        try:
            tables.append(measure_backend(store, settings, backend, environment, runner or run_child))
        except KeyboardInterrupt:
            tables.append({"backend": backend, "status": "interrupted", "detail": "interrupted: nothing stored"})
            break
    measured = {t["backend"] for t in tables if t["status"] == "stored"}
    after = [r for r in _records(store) if r["backend"] in measured]
    items = efficiency_items(before, after, k=k, min_rel=min_rel) if measured else []
    return {"status": section_status(tables), "settings": settings.to_dict(), "tables": tables, "items": items}


def section_status(tables: Sequence[Mapping[str, Any]]) -> str:
    """``interrupted``; else ``failed`` (nothing stored), ``partly stored``, ``stored``, or
    ``skipped`` (no backend had a listed adapter)."""
    kinds = {t["status"] for t in tables}
    if "interrupted" in kinds:
        return "interrupted"
    if "failed" in kinds:
        return "partly stored" if "stored" in kinds else "failed"
    return "stored" if "stored" in kinds else "skipped"


def lines(section: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """What to print of a ``step_cost`` section: ``(notes, warnings)``."""
    notes, warnings = [], []
    for t in section.get("tables", []):
        if t["status"] == "stored":
            failed = f"; failed adapters: {', '.join(t['failed_adapters'])}" if t.get("failed_adapters") else ""
            notes.append(f"step-cost table ({t['backend']}): {t['rows']} rows stored in {t['wall_s']:.0f} s{failed}")
        elif t["status"] == "skipped":
            notes.append(f"step-cost table ({t['backend']}): skipped: {t['detail']}")
        else:
            warnings.append(f"step-cost table ({t['backend']}) not stored: {t['detail']}")
    for i in section.get("items", []):
        if i["flag"] != "unchanged":
            notes.append(f"step cost {i['flag']}: {i['backend']} {i['problem']} {i['adapter']}: {i['detail']}")
    return notes, warnings
