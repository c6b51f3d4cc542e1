"""``ngbench quickstart``: the README's main job on the embedded default.

A sweep of every available optimizer over the CPU-size suites (seed 0, untuned track) through
the same orchestrator as ``ngbench sweep`` (fresh worker per run, exactly-once storage, resume),
into the default SQLite file, then the static site; it prints where both are. Running it again
completes only what is missing and rebuilds the site.

Runs go to one worker per GPU, else one worker per core (at most four), each with its own
thread, so they do not share cores (:func:`harness.devices.plan_devices`). ``minilm-lora`` is
left out by default (a minute or more per run on two cores); name it with ``--suite`` to
include it.

Optimizers that come from plug-in distributions (the reference rows of ``plugins/ngbench-reference``:
Muon, Schedule-Free AdamW, SOAP, Shampoo, PSGD Kron, SINGD; kfac-jax with ``--backend jax``) run
on :data:`PLUGIN_SUITES` only, unless ``--suite`` names the suites: on a CPU their steps cost 2
to 60 times an SGD step (Shampoo's inverse roots every step, PSGD's preconditioner fits, ``torch.optim.Muon``'s bfloat16
Newton-Schulz, slow on CPUs), and on every quick suite they would double the quickstart's time.
Their budgets are the suites' own, so the runs are scored like every other.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from harness import registry
from harness.commands.runs import DbOption, make_console
from harness.commands.sweep import DevicesOption, raise_if_kept, run_plan
from harness.errors import ConfigError
from harness.plans import expand
from harness.site import build_site
from harness.sweep import load_config, parse_devices
from suites import list_suites

#: Suites the quickstart leaves out unless named: minutes per run on a laptop CPU.
SLOW_SUITES = frozenset({"minilm-lora"})
#: The quick suites the plug-in optimizers run on by default (the cheapest per step and per budget).
PLUGIN_SUITES = ("breast-cancer-logreg", "diabetes-mlp", "rosenbrock")


def quickstart_config(
    suites: list[str], backends: list[str], seeds: list[int], *, plugins: bool | None = None
) -> dict[str, Any]:
    """The quickstart's sweep mapping (validated like a sweep file): every optimizer, or only the
    built-in ones (``plugins=False``) or only the plug-in ones (``plugins=True``)."""
    optimizers: list[str] = []
    for backend in backends:
        builtin = set(registry.builtin_names(backend))
        optimizers += [
            n
            for n in registry.adapters(backend)
            if n not in optimizers and (plugins is None or (n not in builtin) == plugins)
        ]
    return {
        "name": "quickstart",
        "suites": suites,
        "optimizers": optimizers,
        "backends": backends,
        "seeds": seeds,
    }


def _plan(suites: list[str], backends: list[str], seeds: list[int], *, plugins: bool | None) -> Any:
    raw = quickstart_config(suites, backends, seeds, plugins=plugins)
    return expand(load_config(raw, where="ngbench quickstart"), where="ngbench quickstart")


def register(app: typer.Typer) -> None:
    @app.command("quickstart")
    def quickstart(
        db: DbOption = None,
        out: Annotated[Path, typer.Option(help="Directory of the static site.")] = Path("site"),
        suite: Annotated[
            list[str] | None, typer.Option("--suite", help="Suites (default: the CPU-size ones but minilm-lora).")
        ] = None,
        backend: Annotated[list[str] | None, typer.Option("--backend", help="Backends (default: torch).")] = None,
        seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds 0..K-1 per run.")] = 1,
        workers: Annotated[
            int | None,
            typer.Option("--workers", min=1, help="Parallel workers [one per GPU, else one per core, at most 4]."),
        ] = None,
        devices: DevicesOption = None,
    ) -> None:
        """Run every optimizer on the CPU-size suites, store the runs, build the site."""
        backends = backend or ["torch"]
        for b in backends:
            if not registry.backend_available(b):
                raise ConfigError(f"backend {b!r} is not installed (pip install 'ngbench[{b}]')")
        names = suite or [s.name for s in list_suites("ci") if s.name not in SLOW_SUITES]
        plugin_names = suite or [n for n in PLUGIN_SUITES if n in names]
        plan = _plan(names, backends, list(range(seeds)), plugins=False if not suite else None)
        if not suite:
            extra = quickstart_config(plugin_names, backends, list(range(seeds)), plugins=True)
            if extra["optimizers"]:
                more = expand(load_config(extra, where="ngbench quickstart"), where="ngbench quickstart")
                plan = dataclasses.replace(
                    plan,
                    specs=plan.specs + more.specs,
                    skipped=plan.skipped + more.skipped,
                    adapters={**plan.adapters, **more.adapters},
                )
                make_console().print(
                    Text(
                        f"plug-in optimizers ({', '.join(extra['optimizers'])}) run on {', '.join(plugin_names)} "
                        "only (costly steps on a CPU); name suites with --suite to run them on others"
                    )
                )
        cpu_workers = max(1, min(4, os.cpu_count() or 1))
        devs = parse_devices(devices)
        summary, store = run_plan("sweep", plan, "local", devs, workers, True, db, None, "fork", cpu_workers)
        url = store.display_url
        store.dispose()
        raise_if_kept(summary)
        console = make_console()
        console.print(Text(f"results: {url} (list them with: ngbench runs)"))
        if summary.interrupted:
            raise typer.Exit(130)
        report = build_site(db, out, tracks=None)
        console.print(Text(f"leaderboard: {(report.out / 'index.html').resolve()} ({report.pages} pages)"))
