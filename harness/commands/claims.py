"""``ngbench claims`` (each claim's verdict with its evidence) and ``ngbench claims run``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.text import Text

from db.store import open_store
from harness.claims import run_claims, run_command, select, verdicts
from harness.commands.runs import DbOption, make_console
from harness.errors import ConfigError

SizeOption = Annotated[str | None, typer.Option("--size", help="Only claims of this size: ci or gpu.")]
OnlyOption = Annotated[list[str] | None, typer.Option("--only", help="Only this claim id (repeatable).")]


def _check_size(size: str | None) -> None:
    if size not in (None, "ci", "gpu"):
        raise ConfigError(f"--size must be ci or gpu, got {size!r}")


def _json_default(value: object) -> object:
    return str(value)


def register(app: typer.Typer) -> None:
    claims_app = typer.Typer(help="Each paper's headline claim as an experiment with a verdict.")
    app.add_typer(claims_app, name="claims")

    @claims_app.callback(invoke_without_command=True)
    def show(
        ctx: typer.Context,
        db: DbOption = None,
        size: SizeOption = None,
        only: OnlyOption = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON document for machines.")] = False,
    ) -> None:
        """Print every claim's verdict with its evidence, one line each (``--json`` for machines)."""
        if ctx.invoked_subcommand is not None:
            return
        _check_size(size)
        selected = select(size, only or ())
        outcomes = verdicts(open_store(db), selected)
        if as_json:
            doc = [
                {
                    "id": o.claim.id,
                    "version": o.claim.version,
                    "paper": o.claim.paper,
                    "place": o.claim.place,
                    "statement": o.claim.statement,
                    "rule": o.claim.rule.text,
                    "verdict": o.verdict.value,
                    "summary": o.summary,
                    "evidence": list(o.evidence),
                    "table": list(o.table),
                    "stale": o.stale,
                    "measured_on": o.measured_on,
                    "measured_at": o.measured_at,
                    "command": run_command(o.claim),
                }
                for o in outcomes
            ]
            typer.echo(json.dumps(doc, indent=2, default=_json_default))
            return
        console = make_console()
        for o in outcomes:
            console.print(Text(f"{o.claim.id} (v{o.claim.version}): {o.summary}"))
            for line in o.evidence:
                console.print(Text(f"  {line}"))
            if o.verdict.value == "not measured":
                console.print(Text(f"  measure it: {run_command(o.claim)}"))

    @claims_app.command("run")
    def run(
        db: DbOption = None,
        size: SizeOption = "ci",
        only: OnlyOption = None,
        workers: Annotated[int | None, typer.Option(min=1, help="Parallel CPU workers.")] = None,
    ) -> None:
        """Run what each claim needs (resumable; nothing whose run is stored runs twice)."""
        _check_size(size)
        selected = select(size, only or ())
        store = open_store(db)
        err = make_console(stderr=True)
        report = run_claims(store, selected, workers=workers, on_line=lambda line: err.print(Text(line)))
        console = make_console()
        for done, o in zip(report, verdicts(store, selected), strict=True):
            console.print(Text(f"{o.claim.id}: ran {done.ran}, already stored {done.skipped}; {o.summary}"))
            for failure in done.failed:
                console.print(Text(f"  {failure}"))
