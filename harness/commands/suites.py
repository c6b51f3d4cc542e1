"""``ngbench data check`` (what each suite needs, what is missing) and ``ngbench calibrate``."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from harness.calibrate import calibrate
from harness.commands.runs import make_console
from harness.devices import single_device
from harness.errors import ConfigError
from suites import datadir, get_suite, list_suites

DataDirOption = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        help="Directory holding the GPU-size suites' files (default: $NGBENCH_DATA_DIR, else ~/ngbench-data).",
    ),
]


def apply_data_dir(path: str | None) -> None:
    """Make ``--data-dir`` the data directory of this process and the workers it starts."""
    if path:
        datadir.set_data_dir(path)


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"{option} expects comma-separated numbers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} expects at least one number")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"{option} expects finite numbers, got {bad[0]}")
    return values


def data_report(names: list[str] | None = None, root: str | None = None) -> tuple[list[str], bool]:
    """Lines describing every (or the named) suite's data, and whether anything is missing."""
    base = datadir.data_dir(root)
    origin = "--data-dir" if root else (f"${datadir.ENV_VAR}" if os.environ.get(datadir.ENV_VAR) else "default")
    lines = [f"data directory: {base} ({origin})"]
    suites = [get_suite(n) for n in names] if names else list_suites()
    any_missing = False
    for s in suites:
        missing = s.missing(base)
        any_missing |= bool(missing)
        needs = [f.describe() for f in s.data_files] + [f"Python package {p}" for p in s.packages]
        state = "ok" if not missing else f"MISSING {len(missing)} of {len(needs)}"
        source = f"; {s.source}" if s.source else ""
        lines.append(f"{s.name} ({s.size}): {state}{source}")
        for f in s.data_files:
            found = f.find(base)
            mark = "ok     " if found is not None else "missing"
            where = str(found) if found is not None else " or ".join(str(base / n) for n in f.names)
            lines.append(f"  {mark} {where}" + (f"  ({f.description})" if f.description else ""))
        for p in s.packages:
            mark = "ok     " if importlib.util.find_spec(p) is not None else "missing"
            lines.append(f"  {mark} Python package {p}")
    return lines, any_missing


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="The suites' data files.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("check")
    def check(
        suite: Annotated[
            list[str] | None,
            typer.Option("--suite", help="Only this suite (repeatable); exit 1 if its data is missing."),
        ] = None,
        data_dir: DataDirOption = None,
    ) -> None:
        """List what every suite needs under the data directory and what is missing."""
        apply_data_dir(data_dir)
        lines, missing = data_report(suite, data_dir)
        # Plain lines: paths must not be wrapped or styled (they are copied into shells).
        typer.echo("\n".join(lines))
        if suite and missing:
            raise typer.Exit(1)

    @app.command("calibrate")
    def calibrate_cmd(
        suite: Annotated[str, typer.Argument(help="Suite name (ngbench list suites).")],
        optimizer: Annotated[str, typer.Option(help="Reference optimizer of the grid.")] = "adamw",
        lrs: Annotated[str | None, typer.Option(help="Comma-separated learning rates (default: half-decades).")] = None,
        weight_decays: Annotated[
            str | None,
            typer.Option("--weight-decays", help="Comma-separated weight decays (default: the optimizer's)."),
        ] = None,
        seeds: Annotated[int, typer.Option(min=1, help="Seeds per configuration (AlgoPerf: 20).")] = 3,
        backend: Annotated[str, typer.Option(help="torch or jax.")] = "torch",
        dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
        device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "cpu",
        steps: Annotated[
            int | None, typer.Option(min=1, help="Steps per run (default: 3/4 of the suite's step budget).")
        ] = None,
        data_dir: DataDirOption = None,
    ) -> None:
        """Set a suite's target the AlgoPerf way: median over seeds of a tuned grid's best run.

        Prints the evidence and the Target(...)/Calibration(...) lines to freeze in the suite's
        file (it edits nothing). See harness/calibrate.py for the procedure.
        """
        single_device(device)  # a GPU that is not there fails here, before any run
        apply_data_dir(data_dir)
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"unknown dtype {dtype!r} (known: float32, float64)")
        err = make_console(stderr=True)

        def progress(hp: dict, seed: int, result) -> None:  # type: ignore[no-untyped-def]
            hp_text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hp.items()))
            best = "-" if result.best_val_metric is None else f"{result.best_val_metric:.4g}"
            err.print(Text(f"  {hp_text} seed {seed}: {result.status}, best {result.val_metric} {best}"))
            if result.status == "error" and result.error:
                err.print(Text(result.error.strip().splitlines()[-1]))

        report = calibrate(
            suite,
            optimizer=optimizer,
            lrs=_floats(lrs, "--lrs"),
            weight_decays=_floats(weight_decays, "--weight-decays"),
            seeds=seeds,
            backend=backend,
            dtype=dtype,
            device=device,
            steps=steps,
            on_run=progress,
        )
        out = make_console()
        s = report.suite
        out.print(
            Text(
                f"{s.name} v{s.version}: {optimizer}, {report.seeds} seeds x {report.steps} steps "
                f"(budget {s.budget.steps}), {backend} {dtype} on {device}; metric {s.val_metric} ({report.mode})"
            )
        )
        table = Table("config", *(f"seed {i}" for i in range(report.seeds)), "median", "steps to target", "statuses")
        for row in report.table():
            table.add_row(*(Text(c) for c in row))
        out.print(table)
        ttt = report.time_to_target_s()
        out.print(Text(f"best: {report.best.hparams}; target {s.val_metric} {report.target_value:.3g}"
                       + (f", reached after {ttt:.1f} s of steps (median)" if ttt is not None else "")))  # fmt: skip
        out.print(Text("Freeze in the suite file (and bump its version):"))
        print(report.target_line())
        print(report.budget_line())
        print(report.calibration_line())
        sys.stdout.flush()
