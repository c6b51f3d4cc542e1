"""``ngbench calibrate-defaults``: choose a method default on the held-out suites."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from harness.commands.runs import make_console
from harness.commands.suites import _floats
from harness.defaults_calibration import calibrate_default
from harness.errors import ConfigError


def _settings(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set expects NAME=VALUE, got {pair!r}")
        out[name.strip()] = value.strip()
    return out


def register(app: typer.Typer) -> None:
    @app.command("calibrate-defaults")
    def calibrate_defaults_cmd(
        method: Annotated[str, typer.Argument(help="Optimizer name (ngbench list optimizers).")],
        hparam: Annotated[str, typer.Option("--hparam", help="The hyperparameter whose default is calibrated.")],
        grid: Annotated[str, typer.Option("--grid", help="Comma-separated values to try, e.g. 1e-4,1e-3,1e-2.")],
        seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1 per value and suite.")] = 2,
        steps: Annotated[int, typer.Option(min=1, help="Steps per run (the held-out suites' budget).")] = 200,
        suite: Annotated[
            list[str] | None,
            typer.Option("--suite", help="Only this held-out suite (repeatable; default: every held-out suite)."),
        ] = None,
        settings: Annotated[
            list[str] | None,
            typer.Option("--set", help="NAME=VALUE: another hyperparameter away from its default (repeatable)."),
        ] = None,
        backend: Annotated[str, typer.Option(help="torch or jax.")] = "torch",
        dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    ) -> None:
        """Calibrate one default of METHOD on the held-out suites (never on a scored suite).

        Runs every grid value with the method's other defaults on every suite of size
        ``heldout``, takes per suite the median over seeds of the best validation metric, and
        chooses the value with the best median rank across the suites (ties: better mean rank,
        then the first in the grid). Prints the evidence to freeze beside the default in the
        method card (it edits nothing). See harness/defaults_calibration.py and docs/defaults.md.
        """
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"unknown dtype {dtype!r} (known: float32, float64)")
        values = _floats(grid, "--grid") or []
        err = make_console(stderr=True)

        def progress(name: str, value: float, seed: int, result) -> None:  # type: ignore[no-untyped-def]
            best = "-" if result.best_val_metric is None else f"{result.best_val_metric:.4g}"
            status = f"{result.status}, best {result.val_metric} {best}"
            err.print(Text(f"  {name} {hparam}={value:g} seed {seed}: {status}"))

        report = calibrate_default(
            method,
            hparam,
            values,
            suites=suite,
            seeds=seeds,
            steps=steps,
            fixed=_settings(settings),
            backend=backend,
            dtype=dtype,
            on_run=progress,
        )
        out = make_console()
        for line in report.table():
            out.print(Text(line))
        out.print(Text(f"chosen {hparam} = {report.evidence.chosen:g} (best median rank across held-out suites)"))
        out.print(Text(f"evidence: {report.evidence!r}"))
        out.print(Text(f"source: {report.evidence.describe()}"))
