"""The built site in headless Chromium: every page clean, links resolve, tables sort, hostile
text stays text, phones need no sideways scrolling, numbers need no JavaScript."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlparse

import pytest

from tests.fixtures_browser import browser, page  # noqa: F401  (fixtures)
from tests.test_site_build import EVIL_OPTIMIZER, IMG_ONERROR, SCRIPT_TAG, make_results_db, parse

pytestmark = [pytest.mark.slow, pytest.mark.browser]  # a headless browser over a built site

#: Resolved URLs of every reference in the page, and whether each image decodes.
_INSPECT = """async () => {
  const refs = [];
  for (const el of document.querySelectorAll('a[href], link[href], script[src], img[src]')) {
    refs.push(el.href || el.src);
  }
  const images = Array.from(document.images);
  images.forEach((img) => { img.loading = 'eager'; });
  const decoded = await Promise.all(images.map((img) => img.decode().then(() => true, () => img.src)));
  return {
    refs: refs,
    broken: decoded.filter((d) => d !== true),
    pwned: window.__pwned === undefined ? null : window.__pwned,
    inlineScripts: Array.from(document.scripts).filter((s) => !s.src).length,
  };
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    from leaderboard.site import build

    tmp = tmp_path_factory.mktemp("browser-site")
    store, ids = make_results_db(tmp / "results.db")
    build(store, tmp / "site", jobs=1)
    store.dispose()
    yield tmp / "site", ids


def _check_refs(site: Path, page_path: Path, refs: list[str], ids_of: dict[Path, set[str]]) -> list[str]:
    problems = []
    for ref in refs:
        url = urlparse(ref)
        if url.scheme != "file":
            problems.append(f"{page_path.name}: non-local reference {ref}")
            continue
        target, fragment = urldefrag(ref)
        path = Path(unquote(urlparse(target).path))
        if not path.is_file() or site.resolve() not in path.resolve().parents:
            problems.append(f"{page_path.relative_to(site)}: {ref} does not resolve inside the site")
            continue
        if fragment and path.suffix == ".html":
            if path not in ids_of:
                ids_of[path] = parse(path).ids
            if fragment not in ids_of[path]:
                problems.append(f"{page_path.relative_to(site)}: {ref} has no #{fragment}")
    return problems


def test_every_page_loads_without_errors_and_every_link_resolves(site: tuple[Path, dict[str, Any]], page: Any) -> None:  # noqa: F811
    root, _ = site
    pages = sorted(root.rglob("*.html"))
    assert len(pages) > 60
    problems: list[str] = []
    ids_of: dict[Path, set[str]] = {}
    for path in pages:
        page.problems.clear()
        page.goto(path.resolve().as_uri())
        found = page.evaluate(_INSPECT)
        # The favicon is fetched after "load"; the next navigation cancels that fetch (the file
        # itself is checked with every other reference below).
        problems += [
            f"{path.relative_to(root)}: {p}" for p in page.problems if not p.endswith("favicon.svg net::ERR_ABORTED")
        ]
        problems += [f"{path.relative_to(root)}: image does not decode: {b}" for b in found["broken"]]
        if found["pwned"] is not None or found["inlineScripts"]:
            problems.append(f"{path.relative_to(root)}: injected script ran or inline script present")
        problems += _check_refs(root, path, found["refs"], ids_of)
    assert problems == []


def _column(pg: Any, table: str, index: int) -> list[str]:
    return pg.eval_on_selector_all(
        f"{table} tbody tr",
        f"rows => rows.map(r => r.cells[{index}].getAttribute('data-sort') ?? r.cells[{index}].textContent.trim())",
    )


def _numbers(values: list[str]) -> list[float]:
    return [float(v) for v in values if v != ""]


def test_tables_sort_by_clicking_a_header(site: tuple[Path, dict[str, Any]], page: Any) -> None:  # noqa: F811
    root, _ = site
    page.goto((root / "suites" / "tiny-ce.html").resolve().as_uri())
    table = "section:first-of-type table.results"
    headers = page.eval_on_selector_all(f"{table} thead th", "ths => ths.map(t => t.textContent.trim())")
    col = headers.index("time to target")
    header = page.locator(f"{table} thead th").nth(col)
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    values = _column(page, table, col)
    nums = _numbers(values)
    assert nums == sorted(nums) and len(nums) >= 3
    assert all(v != "" for v in values[: len(nums)]) and all(v == "" for v in values[len(nums) :])  # missing last
    header.press("Enter")  # keyboard works too
    assert header.get_attribute("aria-sort") == "descending"
    nums_desc = _numbers(_column(page, table, col))
    assert nums_desc == sorted(nums_desc, reverse=True)
    assert nums_desc[0] == float("inf")  # ief missed: its ∞ sorts as the largest value
    # Text columns sort too.
    opt = page.locator(f"{table} thead th").nth(0)
    opt.click()
    names = [
        n.lower() for n in page.eval_on_selector_all(f"{table} tbody tr th", "c => c.map(x => x.textContent.trim())")
    ]
    assert names == sorted(names)


def test_hostile_text_is_shown_as_text_and_runs_nothing(site: tuple[Path, dict[str, Any]], page: Any) -> None:  # noqa: F811
    root, ids = site
    page.goto((root / "runs" / f"{ids['sgd-ce-1']}.html").resolve().as_uri())
    assert page.locator(".usertag").text_content() == SCRIPT_TAG
    assert page.evaluate("document.scripts.length") == 1  # only sort.js
    page.goto((root / "runs" / f"{ids['ief-diverged-1']}.html").resolve().as_uri())
    assert IMG_ONERROR in page.locator("pre.error").text_content()
    assert "<b>bold</b>" in page.locator("h2:has-text('Hyperparameters') + table").text_content()
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], b').length") == 0
    assert page.evaluate("window.__pwned === undefined")
    evil = next((root / "optimizers").glob("x-*.html"))
    page.goto(evil.resolve().as_uri())
    assert EVIL_OPTIMIZER in page.locator("h1").text_content()
    assert page.evaluate("document.querySelectorAll('svg[onload]').length") == 0
    page.goto((root / "history.html").resolve().as_uri())
    assert SCRIPT_TAG in page.locator("body").text_content()
    assert page.problems == []


@pytest.mark.parametrize("path", ["index.html", "suites/tiny-ce.html", "approx.html", "history.html"])
def test_pages_fit_a_phone_without_sideways_scrolling(
    site: tuple[Path, dict[str, Any]],
    browser: Any,  # noqa: F811
    path: str,
) -> None:
    root, _ = site
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        pg = context.new_page()
        pg.goto((root / path).resolve().as_uri())
        width = pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width}px wide on a 390px screen"
        # Wide tables scroll inside their own box instead.
        wrapped = "t => t.closest('.table-wrap') || t.classList.contains('kv')"
        assert pg.evaluate(f"Array.from(document.querySelectorAll('table')).every({wrapped})")
    finally:
        context.close()


def test_numbers_are_readable_without_javascript(site: tuple[Path, dict[str, Any]], browser: Any) -> None:  # noqa: F811
    root, _ = site
    context = browser.new_context(java_script_enabled=False)
    try:
        pg = context.new_page()
        pg.goto((root / "index.html").resolve().as_uri())
        text = pg.locator("#matrix").text_content()
        assert "1.00×" in text and "2.00×" in text
        assert "∞" in text and "diverged 2/3" in text
        scores = pg.locator("#scores").text_content()
        assert "0.778" in scores and "0.333" in scores
    finally:
        context.close()


def test_the_site_served_over_http_loads_cleanly(site: tuple[Path, dict[str, Any]], page: Any) -> None:  # noqa: F811
    from harness.site import make_server

    root, ids = site
    server = make_server(root, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        for path in ("index.html", "suites/tiny-ce.html", f"runs/{ids['error']}.html", "data/runs.json"):
            response = page.goto(base + path, wait_until="networkidle")
            assert response is not None and response.status == 200, path
        assert page.problems == []
    finally:
        server.shutdown()
        server.server_close()
