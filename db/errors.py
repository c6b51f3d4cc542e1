"""Errors the storage layer raises. Their messages are meant for the user as they are (the
database URL in them is already masked); the CLI prints them on one line and exits with 2."""

from __future__ import annotations


class DatabaseError(Exception):
    """The database is unreachable, unwritable, or its schema cannot be brought up to date."""
