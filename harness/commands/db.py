"""``ngbench db upgrade`` and ``ngbench db current`` (the schema's Alembic revision), and
``ngbench db recover`` (store the results of a recovery file, :mod:`harness.recovery`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from db.engine import connect, current_revision, head_revision, masked
from db.store import open_store
from harness.commands.runs import DbOption, make_console
from harness.recovery import recover as recover_file


def register(app: typer.Typer) -> None:
    db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @db_app.command("upgrade")
    def upgrade(db: DbOption = None) -> None:
        """Migrate the database schema to the newest revision (fresh databases migrate automatically)."""
        engine, url = connect(db, migrate=True)
        make_console().print(Text(f"{masked(url)} is at revision {current_revision(engine)}"))
        engine.dispose()

    @db_app.command("current")
    def current(
        db: DbOption = None,
        check: Annotated[bool, typer.Option(help="Exit 1 when the schema is not at the newest revision.")] = False,
    ) -> None:
        """Show the schema revision without migrating."""
        engine, url = connect(db, migrate=False)
        rev, head = current_revision(engine), head_revision()
        engine.dispose()
        make_console().print(Text(f"{masked(url)}: revision {rev or 'none'} (newest {head})"))
        if check and rev != head:
            raise typer.Exit(1)

    @db_app.command("recover")
    def recover(
        recovery_file: Annotated[
            Path, typer.Argument(help="Recovery file named by a storage failure.", metavar="FILE")
        ],
        db: DbOption = None,
    ) -> None:
        """Store the results kept in a recovery file (those already stored are not stored again)."""
        store = open_store(db, writable=True)
        done = recover_file(store, recovery_file)
        store.dispose()
        line = (
            f"{recovery_file}: {done.records} result(s); stored {done.stored}, already stored {done.already} "
            f"in {store.display_url}"
        )
        if done.detached:
            line += f"; {done.detached} stored without their sweep (it is not in this database)"
        make_console().print(Text(line))
