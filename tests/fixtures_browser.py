"""Headless Chromium for tests (Debian's ``/usr/bin/chromium`` driven by Playwright).

``browser`` (session): a launched Chromium; ``page`` (function): a fresh page in a fresh
context whose console errors, uncaught exceptions, failed requests, HTTP errors and dialogs
(``alert``) are collected in ``page.problems``.

Without Chromium or Playwright the tests skip, unless ``NGBENCH_REQUIRE_BROWSER=1`` (set by
CI), which turns the skip into a failure. Never ``playwright install``: it downloads a browser.
Import the fixtures into a test module with
``from tests.fixtures_browser import browser, page  # noqa: F401``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("NGBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def _unavailable(reason: str) -> None:
    if os.environ.get("NGBENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"Chromium required (NGBENCH_REQUIRE_BROWSER=1) but unavailable: {reason}")
    pytest.skip(f"Chromium unavailable: {reason}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium shared by the session."""
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} not found (apt-get install -y chromium)")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed ({exc})")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS))
        except Error as exc:
            _unavailable(f"Chromium did not start: {str(exc).splitlines()[0]}")
        try:
            yield b
        finally:
            b.close()


class Problems(list[str]):
    """What went wrong while a page loaded and ran (empty: nothing)."""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; ``page.problems`` lists console errors, page errors, failed requests,
    responses with status >= 400 and dialogs (a dialog is dismissed and recorded)."""
    context = browser.new_context()
    pg = context.new_page()
    problems = Problems()
    pg.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None
    )
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    pg.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog {dialog.type}: {dialog.message}")
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    pg.problems = problems
    try:
        yield pg
    finally:
        context.close()
