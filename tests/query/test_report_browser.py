"""The HTML report in a real headless browser: it renders, says nothing on the console,
requests nothing, shows the key numbers in its DOM, and leaves a screenshot.

The browser is Debian's ``chromium`` (``make install`` installs it when run as root),
driven by Playwright for Python; Playwright's own browsers are never downloaded.
Without chromium the tests skip, except in CI (``CI`` or ``KPCOMPILE_REQUIRE_BROWSER=1``,
which ``.ci/run`` sets), where a missing browser is a failure. Screenshots are written
to the test's temporary folder and copied to ``.artifacts/`` (git-ignored); the paths
are printed (``pytest -s``) and attached to the test report as properties.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kpcompile
from tests.query.test_report import make_rejected

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def browser_required() -> bool:
    """In CI the browser test must run: a missing browser fails instead of skipping."""
    ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    return ci or os.environ.get("KPCOMPILE_REQUIRE_BROWSER") == "1"


def chromium_path() -> str | None:
    """``KPCOMPILE_CHROMIUM``, else ``chromium`` on the PATH."""
    return os.environ.get("KPCOMPILE_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if browser_required():
            raise
        pytest.skip("playwright is not installed (make install)")
    if path is None:
        if browser_required():
            pytest.fail("chromium is required in CI and is not installed (make install as root)")
        pytest.skip("chromium is not installed (make install as root installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Visit:
    """A page opened on a report, with what it logged and requested."""

    def __init__(self, browser: Any, html: Path) -> None:
        self.console: list[str] = []
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("requestfailed", lambda r: self.console.append(f"failed: {r.url}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(html.as_uri(), wait_until="load")

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith("file:"):
            route.continue_()
        else:  # nothing may leave the page
            self.blocked.append(url)
            route.abort()

    def text(self, selector: str) -> str:
        return str(self.page.inner_text(selector)).strip()

    def screenshot(self, name: str, tmp_path: Path, record: Any) -> Path:
        shot = tmp_path / name
        self.page.screenshot(path=str(shot), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        kept = ARTIFACTS / name
        shutil.copyfile(shot, kept)
        record("screenshot", str(kept))
        print(f"\nscreenshot: {shot} (kept as {kept})")
        return kept


def _renders_cleanly(visit: Visit, html: Path) -> None:
    assert visit.console == []
    assert visit.blocked == [] and visit.requests == [html.as_uri()]
    page = visit.page
    assert page.evaluate("document.images.length") == 3
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    # nothing sticks out sideways: wide tables scroll inside their own box
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_report_in_a_browser(
    browser: Any,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    record_property: Any,
) -> None:
    base = tmp_path_factory.mktemp("browser")
    out = base / "compiled"
    kpcompile.build(make_rejected(base / "dataset"), out, sets=True, max_errors=10, workers=1)
    html = tmp_path / "report.html"
    kpcompile.report(out, html)
    info = kpcompile.info(out)
    visit = Visit(browser, html)
    try:
        _renders_cleanly(visit, html)
        assert visit.text("#snapshot-id") == info.snapshot
        for card, value in [
            ("files", info.files),
            ("compiled", info.compiled),
            ("rejected", info.rejected),
            ("datapoints", info.datapoints),
            ("cameras", info.cameras),
            ("landmarks", info.rows),
        ]:
            assert visit.text(f"#headline-{card} .value") == f"{value:,}", card
        assert (info.files, info.compiled, info.rejected) == (12, 9, 3)
        rejected = visit.text("#rejected")
        for code in ("empty", "invalid_json", "unknown_layout"):
            assert code in rejected
        body = visit.text("body")
        assert f"kpcompile {info.tool_version}" in body and info.source in body
        assert visit.page.locator("#reprojection table").count() == 1
        assert visit.page.locator(".missing").count() == 0
        visit.screenshot("report.png", tmp_path, record_property)
    finally:
        visit.context.close()


def test_report_without_sets_in_a_browser(
    browser: Any, mixed_dataset: Path, tmp_path: Path, record_property: Any
) -> None:
    kpcompile.build(mixed_dataset, tmp_path / "compiled", workers=1)
    html = tmp_path / "report-no-sets.html"
    kpcompile.report(tmp_path / "compiled", html)
    visit = Visit(browser, html)
    try:
        _renders_cleanly(visit, html)
        assert "kpcompile build --sets" in visit.text("#reprojection .missing")
        assert "Pixels outside the image: unknown" in visit.text("#coordinates")
        visit.screenshot("report-no-sets.png", tmp_path, record_property)
    finally:
        visit.context.close()
