"""Errors the site builder raises. Their messages are meant for the user as they are; the CLI
prints them on one line and exits with 2."""

from __future__ import annotations


class SiteError(Exception):
    """The site cannot be written (output directory unusable)."""
