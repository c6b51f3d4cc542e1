"""``ngbench quickstart``: the README's main job on the embedded default.

Every available optimizer on every CPU-size suite (seed 0) into the default SQLite file, then
the static site, and the paths of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from harness.commands.runs import DbOption, fmt_float, make_console


def register(app: typer.Typer) -> None:
    @app.command("quickstart")
    def quickstart(
        db: DbOption = None,
        out: Annotated[Path, typer.Option(help="Directory of the static site.")] = Path("site"),
        backend: Annotated[list[str] | None, typer.Option(help="Backends (default: every installed one).")] = None,
        steps: Annotated[int | None, typer.Option(min=1, help="Cap on each suite's step budget.")] = None,
    ) -> None:
        """Run every optimizer on the CPU-size suites, store the runs, build the site."""
        from backends.spec import BACKENDS
        from db.store import open_store
        from harness import registry
        from harness.runner import RunSpec, execute
        from suites import list_suites

        console = make_console()
        store = open_store(db)
        backends = backend or [b for b in BACKENDS if registry.backend_available(b)]
        suites = list_suites("ci")
        sweep_id = store.create_sweep("quickstart", spec={"backends": backends, "suites": [s.name for s in suites]})
        done = store.finished_keys()
        for suite in suites:
            for b in backends:
                for name in registry.adapters(b):
                    spec = RunSpec(suite.name, name, backend=b, steps=min(steps, suite.budget.steps) if steps else None)
                    result = execute(spec)
                    if result.key in done:
                        continue
                    store.save_run(result, sweep_id=sweep_id)
                    console.print(
                        Text(
                            f"{suite.name:>16} {b:>5} {name:>8}: {result.status:<16} "
                            f"best {result.val_metric} {fmt_float(result.best_val_metric)}"
                        )
                    )
        store.finish_sweep(sweep_id)
        console.print(Text(f"results: {store.display_url} (ngbench runs)"))
        try:
            from leaderboard.build import build_site
        except ImportError:
            return
        index = build_site(store, out)
        console.print(Text(f"site: {Path(index).resolve()}"))
