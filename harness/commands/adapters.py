"""``ngbench check-adapter`` (the conformance battery) and ``ngbench new-adapter`` (a template).

Exit status of ``check-adapter``: 0 when every check passed or was skipped, 1 when any check
failed (each failure printed with its reason, never a traceback unless ``--verbose``), 2 for
user errors (unknown name, unimportable module, unknown backend or check).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from backends.spec import BACKENDS
from harness import conformance
from harness.commands.runs import make_console
from harness.conformance import NAME_PATTERN
from harness.errors import ConfigError, UnknownBackendError
from harness.templates import adapter_source, class_name

_STYLES = {"pass": "green", "fail": "bold red", "skip": "yellow"}


def _print_report(report, verbose: bool) -> None:  # type: ignore[no-untyped-def]
    out = make_console()
    title = Text(f"{report.adapter or report.target} ({report.backend}) from {report.origin}", style="bold")
    out.print(title)
    table = Table("result", "check", "reason", show_edge=False, box=None, pad_edge=False)
    for r in report.results:
        # User-controlled text (names, messages) goes in as Text: printed literally, never as markup.
        table.add_row(Text(r.status.upper(), style=_STYLES[r.status]), Text(r.name), Text(r.reason))
    out.print(table)
    if verbose:
        for r in report.results:
            if r.detail:
                out.print(Text(f"--- {r.name}: traceback", style="bold"))
                out.print(Text(r.detail.rstrip()))
    out.print(Text(report.summary(), style="green" if report.ok else "bold red"))


def register(app: typer.Typer) -> None:
    @app.command("check-adapter")
    def check_adapter(
        adapter: Annotated[
            str, typer.Argument(help="A registered optimizer name, or module:Class, or path/to/file.py:Class.")
        ],
        backend: Annotated[
            str | None,
            typer.Option(help="torch or jax (default: the class's own; for a name, every backend that has it)."),
        ] = None,
        check: Annotated[
            list[str] | None,
            typer.Option("--check", help="Run only this check (repeatable; its prerequisites run too)."),
        ] = None,
        device: Annotated[str, typer.Option(help="Device of the check problems (cpu, cuda ...).")] = "cpu",
        json_out: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-v", help="Print the traceback of checks failed by an exception.")
        ] = False,
    ) -> None:
        """Run the conformance battery on an optimizer adapter (see CONTRIBUTING.md)."""
        if backend is not None and backend not in BACKENDS:
            raise UnknownBackendError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
        unknown = [c for c in check or [] if c not in conformance.CHECK_NAMES]
        if unknown:
            known = ", ".join(conformance.CHECK_NAMES)
            raise ConfigError(f"unknown check(s) {', '.join(unknown)} (known: {known})")
        if ":" in adapter or backend is not None:
            targets: list[str | None] = [backend]
        else:
            found = conformance.backends_of(adapter)
            if not found:
                conformance.resolve_target(adapter, "torch")  # raises the unknown-name error with hints
            targets = list(found)
        reports = [conformance.check_adapter(adapter, b, checks=check or None, device=device) for b in targets]
        if json_out:
            print(json.dumps([r.to_dict() for r in reports], default=str))
        else:
            for r in reports:
                _print_report(r, verbose)
        if not all(r.ok for r in reports):
            raise typer.Exit(1)

    @app.command("new-adapter")
    def new_adapter(
        name: Annotated[str, typer.Argument(help="The optimizer's name: a lowercase slug such as my-sgd.")],
        backend: Annotated[str, typer.Option(help="torch or jax.")] = "torch",
        out: Annotated[
            Path | None, typer.Option(help="File (or directory) to write; default ./<name>.py (dashes as _).")
        ] = None,
    ) -> None:
        """Write a commented one-file adapter template that passes check-adapter."""
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(
                f"optimizer name {name!r} is not a lowercase slug [a-z][a-z0-9_-]* of at most 40 characters"
            )
        if backend not in BACKENDS:
            raise UnknownBackendError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
        filename = f"{name.replace('-', '_')}.py"
        path = out if out is not None else Path(filename)
        if path.is_dir() or not path.suffix:  # a directory, existing or meant
            path = path / filename
        if path.suffix != ".py":
            raise ConfigError(f"{path} does not end in .py")
        if path.exists():
            raise ConfigError(f"refusing to overwrite {path}: it exists")
        if not path.parent.is_dir():
            raise ConfigError(f"cannot write {path}: directory {path.parent} does not exist")
        reference = f"{path}:{class_name(name)}"
        source = adapter_source(name, backend, reference=reference)
        try:
            with path.open("x", encoding="utf-8") as f:  # "x": never overwrite, even in a race
                f.write(source)
        except FileExistsError:
            raise ConfigError(f"refusing to overwrite {path}: it exists") from None
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
        console = make_console()
        console.print(Text(f"wrote {path} ({backend} adapter {name!r}, class {class_name(name)})"))
        console.print(Text(f"next: ngbench check-adapter {reference}"))
