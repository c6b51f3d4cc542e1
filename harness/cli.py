"""The ``ngbench`` command line.

Commands live in ``harness/commands/<name>.py``; each module exposes ``register(app)`` and is
listed in :data:`COMMAND_MODULES`. Errors a user can cause (``harness.errors.USER_ERRORS``)
and every storage failure (a damaged, locked or read-only database, whichever command meets it)
print one line on stderr and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys

import typer
from sqlalchemy.exc import SQLAlchemyError

from db.errors import driver_reason, explain
from harness.errors import USER_ERRORS

#: Modules contributing commands, in help order. A module that is absent is skipped.
COMMAND_MODULES: tuple[str, ...] = (
    "harness.commands.runs",
    "harness.commands.db",
    "harness.commands.methods",
    "harness.commands.suites",
    "harness.commands.defaults",
    "harness.commands.approx",
    "harness.commands.sweep",
    "harness.commands.site",
    "harness.commands.adapters",
    "harness.commands.tune",
    "harness.commands.quickstart",
    "harness.commands.doctor",
    "harness.commands.claims",
)

app = typer.Typer(
    name="ngbench",
    help="Benchmark harness and leaderboard for natural-gradient and second-order optimizers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_commands()


def fail(message: str, code: int = 2) -> None:
    """Print ``ngbench: error: message`` on stderr and exit with ``code``."""
    print(f"ngbench: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ngbench`` console script."""
    try:
        # Standalone mode: Typer prints usage errors itself and exits with status 2.
        app(args=argv, prog_name="ngbench")
    except USER_ERRORS as exc:
        print(f"ngbench: error: {exc}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, sqlite3.Error) as exc:  # a storage failure no command anticipated
        print(f"ngbench: error: storage failed: {explain(driver_reason(exc), '')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ngbench: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        print(exc.code, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
