"""``ngbench list``, ``ngbench run``, ``ngbench runs``, ``ngbench show``."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from backends.spec import BACKENDS
from db.queries import environments_frame, metrics_frame, run_specs, runs_frame
from db.store import open_store
from harness import external, registry
from harness.devices import single_device
from harness.errors import ConfigError
from harness.recovery import store_or_keep
from harness.runner import RunSpec, check_limits, execute, prepare
from harness.worker import Job, Lane
from leaderboard.labels import COMPILED_TORCH, backend_label
from suites import get_suite, list_suites

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL or SQLite path (default: $NGBENCH_DB_URL, else ./ngbench.db)."),
]


def make_console(stderr: bool = False) -> Console:
    """A rich console that prints markup-free and does not squeeze tables into 80 columns when piped."""
    probe = Console(stderr=stderr)
    return Console(stderr=stderr, highlight=False, width=None if probe.is_terminal else 200)


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["lr=0.1", "damping=1e-7"]`` -> ``{"lr": "0.1", ...}``; values are typed by the adapter."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def fmt_float(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def fmt_seconds(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.2f} s"


def fmt_bytes(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def _progress(total: int, console: Console):  # type: ignore[no-untyped-def]
    """A progress callback that shows a bar once a run has taken more than ~2 s."""
    state: dict[str, Any] = {"start": time.perf_counter(), "progress": None, "task": None}

    def on_step(step: int, steps: int, loss: float) -> None:
        progress = state["progress"]
        if progress is None:
            if time.perf_counter() - state["start"] < 2.0 or not console.is_terminal:
                return
            progress = Progress(
                TextColumn("step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            progress.start()
            state["progress"], state["task"] = progress, progress.add_task("run", total=steps, loss="-")
        progress.update(state["task"], completed=step, loss=fmt_float(loss))

    def close() -> None:
        if state["progress"] is not None:
            state["progress"].stop()

    return on_step, close


def validate_external(spec: Any) -> None:
    """What ``runner.prepare`` checks, for an adapter described by a scrubbed worker."""
    check_limits(spec)
    suite = get_suite(spec.suite)
    if spec.dtype not in ("float32", "float64"):
        raise ConfigError(f"unknown dtype {spec.dtype!r} (known: float32, float64)")
    answer = external.describe([external.DescribeRequest(spec.optimizer, spec.backend, ((spec.hparams, spec.preset),))])
    info = answer[0]
    if isinstance(info, str):
        raise ConfigError(info)
    info.resolve(spec.hparams, spec.preset)
    if suite.likelihood not in info.likelihoods:
        raise ConfigError(f"optimizer {spec.optimizer!r} does not support likelihood {suite.likelihood!r}")


def run_in_worker(spec: Any) -> Any:
    """Run ``spec`` in a fresh, scrubbed worker process; every outcome is a result."""
    lane = Lane("run", device=spec.device, isolation="spawn")
    try:
        return lane.run(Job(index=0, spec=spec)).result
    finally:
        lane.close()


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_(
        what: Annotated[str, typer.Argument(help="What to list: suites or optimizers.")],
        backend: Annotated[str | None, typer.Option(help="Only this backend (optimizers).")] = None,
        size: Annotated[str | None, typer.Option(help="Only suites of this size: test, ci, gpu, heldout.")] = None,
    ) -> None:
        """List the registered suites or the available optimizers."""
        out = make_console()
        if what == "suites":
            table = Table("suite", "version", "size", "likelihood", "params", "batch", "target", "description")
            for s in list_suites(size):
                target = s.target.describe() if s.target else "-"
                row = (s.name, str(s.version), s.size, s.likelihood, str(s.model.num_params()), str(s.batch_size))
                table.add_row(*(Text(c) for c in (*row, target, s.description)))
            out.print(table)
        elif what == "optimizers":
            backends = [backend] if backend else [b for b in BACKENDS if registry.backend_available(b)]
            table = Table("optimizer", "backend", "from", "paper", "description")
            for b in backends:
                for name, cls in registry.adapters(b).items():
                    origin = registry.adapter_origin(cls)
                    table.add_row(Text(name), Text(b), Text(origin), Text(cls.paper), Text(cls.description))
            out.print(table)
            for problem in registry.entry_point_errors():
                print(f"ngbench: warning: {problem}", file=sys.stderr)
        else:
            raise ConfigError(f"cannot list {what!r}: choose 'suites' or 'optimizers'")

    @app.command("run")
    def run(
        suite: Annotated[str, typer.Argument(help="Suite name (ngbench list suites).")],
        optimizer: Annotated[str, typer.Argument(help="Optimizer name, or module:Class for a third-party adapter.")],
        backend: Annotated[str, typer.Option(help="torch or jax.")] = "torch",
        seed: Annotated[int, typer.Option(help="Master seed of the run.")] = 0,
        steps: Annotated[int | None, typer.Option(min=1, help="Step budget (default: the suite's).")] = None,
        set_: Annotated[
            list[str] | None, typer.Option("--set", help="Hyperparameter override key=value (repeatable).")
        ] = None,
        preset: Annotated[str | None, typer.Option(help="Named hyperparameter preset of the adapter.")] = None,
        device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:1 ...")] = "auto",
        dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
        db: DbOption = None,
        tag: Annotated[str | None, typer.Option(help="Free-text tag stored with the run.")] = None,
        no_stop_at_target: Annotated[bool, typer.Option(help="Keep training after the target is reached.")] = False,
        torch_compile: Annotated[
            bool,
            typer.Option(
                "--torch-compile",
                help="Compile the step with torch.compile (torch only): compile time booked apart, "
                "ranked as backend torch-compiled.",
            ),
        ] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print the result summary as JSON.")] = False,
    ) -> None:
        """Run one optimizer on one suite, measured, and store the result."""
        single_device(device)  # a GPU that is not there fails here, before anything is written
        spec = RunSpec(
            suite=suite,
            optimizer=optimizer,
            backend=backend,
            seed=seed,
            steps=steps,
            hparams=parse_assignments(set_),
            preset=preset,
            device=device,
            dtype=dtype,
            tag=tag,
            stop_at_target=not no_stop_at_target,
            torch_compile=torch_compile,
        )
        if external.is_builtin(optimizer, backend):
            prepare(spec)  # unknown names and bad hyperparameters fail here, before anything is written
            store = open_store(db, writable=True)  # an unusable database fails here, before the run
            err = make_console(stderr=True)
            on_step, close = _progress(spec.steps or 0, err)
            try:
                result = execute(spec, on_step=on_step)
            finally:
                close()
        else:
            # Third-party code never runs in this process, which holds the database URL.
            validate_external(spec)
            store = open_store(db, writable=True)
            make_console(stderr=True).print(
                Text("third-party adapter: running in an isolated worker process (no progress display)")
            )
            result = run_in_worker(spec)
        run_id = store_or_keep(store, result)
        summary = {
            "run_id": run_id,
            "database": store.display_url,
            "status": result.status,
            "steps": result.steps,
            "initial_train_loss": result.initial_train_loss,
            "final_train_loss": result.final_train_loss,
            "val_metric": result.val_metric,
            "best_val_metric": result.best_val_metric,
            "steps_to_target": result.steps_to_target,
            "time_to_target_s": result.time_to_target_s,
            "train_time_s": result.train_time_s,
            "compile_time_s": result.compile_time_s,
            "step_time_median_s": result.step_time_median_s,
            "peak_memory_bytes": result.peak_memory_bytes,
            "peak_memory_above_baseline_bytes": result.peak_memory_above_baseline_bytes,
            "memory_kind": result.memory_kind,
            "passes_per_step": result.passes_per_step,
        }
        if json_out:
            print(json.dumps(summary, default=str))
        else:
            console = make_console()
            console.print(
                Text(
                    f"{suite} / {result.spec.optimizer} ({result.spec.board_backend}, "
                    f"seed {seed}): {result.status} after "
                    f"{result.steps} steps; train loss {fmt_float(result.initial_train_loss)} -> "
                    f"{fmt_float(result.final_train_loss)}; best {result.val_metric} "
                    f"{fmt_float(result.best_val_metric)}; median step {fmt_seconds(result.step_time_median_s)}"
                    f"{f' (compile {fmt_seconds(result.compile_time_s)} apart)' if torch_compile else ''}; "
                    f"peak memory {fmt_bytes(result.peak_memory_bytes)} ({result.memory_kind}), "
                    f"{fmt_bytes(result.peak_memory_above_baseline_bytes)} above the baseline"
                )
            )
            console.print(Text(f"stored as run {run_id} in {store.display_url}"))
        if result.status == "error" and result.error:
            print(result.error.strip().splitlines()[-1], file=sys.stderr)
        store.dispose()
        if result.status == "interrupted":
            raise typer.Exit(130)
        if result.status in ("error", "crashed"):
            raise typer.Exit(1)

    @app.command("runs")
    def runs(
        db: DbOption = None,
        suite: Annotated[str | None, typer.Option(help="Only this suite.")] = None,
        optimizer: Annotated[str | None, typer.Option(help="Only this optimizer.")] = None,
        backend: Annotated[str | None, typer.Option(help="Only this backend (torch, torch-compiled, jax).")] = None,
        status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
        tag: Annotated[str | None, typer.Option(help="Only this tag.")] = None,
        limit: Annotated[int, typer.Option(min=1, help="Newest N runs.")] = 50,
        csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table.")] = False,
    ) -> None:
        """Table of stored runs (newest last)."""
        store = open_store(db)
        framework = "torch" if backend == COMPILED_TORCH else backend
        frame = runs_frame(store, suite=suite, optimizer=optimizer, backend=framework, status=status, tag=tag)
        if not frame.empty:  # compiled PyTorch shows (and filters) as the board labels it
            specs = run_specs(store)
            frame["backend"] = [backend_label(b, specs.get(int(i))) for b, i in zip(frame["backend"], frame["id"])]
            if backend is not None:
                frame = frame[frame["backend"] == backend]
        frame = frame.tail(limit)
        columns = [
            "id",
            "suite",
            "optimizer",
            "backend",
            "seed",
            "status",
            "steps",
            "final_train_loss",
            "val_metric",
            "best_val_metric",
            "step_time_median_s",
            "peak_memory_bytes",
            "tag",
        ]
        if csv:
            frame[columns].to_csv(sys.stdout, index=False)
            return
        table = Table(
            "id",
            "suite",
            "optimizer",
            "backend",
            "seed",
            "status",
            "steps",
            "final loss",
            "best val metric",
            "median step",
            "peak memory",
            "tag",
            title=f"runs in {store.display_url}",
        )
        for row in frame.itertuples(index=False):
            metric = f"{row.val_metric} {fmt_float(row.best_val_metric)}" if row.val_metric else "-"
            cells = (
                str(row.id),
                row.suite,
                row.optimizer,
                row.backend,
                str(row.seed),
                row.status,
                str(row.steps),
                fmt_float(row.final_train_loss),
                metric,
                fmt_seconds(row.step_time_median_s),
                fmt_bytes(row.peak_memory_bytes),
                row.tag if isinstance(row.tag, str) else "",  # no tag is empty, not pandas' NaN
            )
            table.add_row(*(Text(str(c)) for c in cells))
        console = make_console()
        if frame.empty:
            console.print(Text(f"no runs in {store.display_url}"))
        else:
            console.print(table)
        store.dispose()

    @app.command("show")
    def show(
        run_id: Annotated[int, typer.Argument(help="Run id (ngbench runs).")],
        db: DbOption = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print the stored row as JSON.")] = False,
    ) -> None:
        """Everything stored about one run: spec, hyperparameters, environment, figures, error."""
        store = open_store(db)
        frame = runs_frame(store, ids=[run_id])
        if frame.empty:
            raise ConfigError(f"no run with id {run_id} in {store.display_url}")
        row = frame.iloc[0].to_dict()
        envs = environments_frame(store)
        env = envs[envs.id == row["environment_id"]]
        row["environment"] = env.iloc[0]["details"] if not env.empty else None
        metrics = metrics_frame(store, [run_id])
        row["metric_series"] = {
            name: {"points": len(g), "last_step": int(g.step.iloc[-1]), "last_value": g.value.iloc[-1]}
            for name, g in metrics.groupby("name")
        }
        store.dispose()
        if json_out:
            print(json.dumps(row, default=str, indent=2))
            return
        console = make_console()
        for key, value in row.items():
            if key == "error" and value:
                console.print(Text("error:", style="bold red"))
                console.print(Text(str(value)))
                continue
            if isinstance(value, dict):
                value = json.dumps(value, default=str, sort_keys=True)
            console.print(Text.assemble((f"{key}: ", "bold"), str(value)))
