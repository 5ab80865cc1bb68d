"""Open hacknip's HTML pages in a real browser: Debian's chromium, headless, driven by Playwright.

``.ci/run`` installs chromium (the README's test command does the same); without it these tests fail and say how to
install it, unless ``HACKNIP_SKIP_BROWSER=1`` is set."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
"""Headless as root on a machine with no network: no sandbox, and no background connections to refuse."""


@dataclass
class Shown:
    errors: list[str]
    """Console errors and uncaught page errors."""
    images: list[tuple[float, float]]
    """Rendered width and height of each image."""
    page_width: int


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("HACKNIP_SKIP_BROWSER") == "1":
        pytest.skip("HACKNIP_SKIP_BROWSER=1: the pages are not opened in a browser")
    pytest.fail("Debian's chromium is not installed: apt-get install chromium (as .ci/run does), or set "
                "HACKNIP_SKIP_BROWSER=1 to skip the browser checks")


class Session:
    def __init__(self, browser) -> None:
        self.browser = browser

    def open(self, path: Path, width: int, screenshot: Path | None = None) -> Shown:
        page = self.browser.new_page(viewport={"width": width, "height": 900})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(Path(path).resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => "
                               "[i.complete && i.naturalWidth > 0 ? i.getBoundingClientRect().width : 0, "
                               "i.getBoundingClientRect().height])")
        page_width = page.evaluate("document.documentElement.scrollWidth")
        if screenshot:
            page.screenshot(path=str(screenshot), full_page=True)
        page.close()
        return Shown(errors, [tuple(size) for size in images], page_width)

    def sorted_column(self, path: Path, header: str) -> list[float]:
        """Click a sortable table's header once; return that column's values, top to bottom."""
        page = self.browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(Path(path).resolve().as_uri())
        page.get_by_role("button", name=header, exact=True).first.click()
        column = page.evaluate("""(header) => {
            const table = document.querySelector("table.sortable");
            const index = Array.from(table.querySelectorAll("th")).findIndex(th => th.textContent.trim() === header);
            return Array.from(table.tBodies[0].rows).map(row => parseFloat(row.cells[index].dataset.sort));
        }""", header)
        page.close()
        return column


@contextmanager
def chromium():
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield Session(browser)
        finally:
            browser.close()
