"""``ngbench db upgrade`` and ``ngbench db current``: the schema's Alembic revision."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from db.engine import connect, current_revision, head_revision, masked
from harness.commands.runs import DbOption, make_console


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
