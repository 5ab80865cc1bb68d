"""Screenshot an HTML page (a run's report.html, a hacknip report page) in Debian's chromium, headless, for the docs.

    python bench/report_screenshot.py runs/x/report.html docs/figures/report-run.png --width 1280 [--height 2000]

Prints the console errors (none expected), the rendered size of each figure and the page's width."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, help="Clip to this height (default: the whole page).")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height or 900})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(args.page.resolve().as_uri())
        sizes = page.evaluate("Array.from(document.images).map(i => [i.naturalWidth, "
                              "Math.round(i.getBoundingClientRect().width)])")
        width = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=str(args.out), full_page=args.height is None)
        browser.close()
    print(f"console errors: {errors or 'none'}; figures (natural, shown width): {sizes}; page width {width} px "
          f"at a {args.width} px viewport → {args.out}")


if __name__ == "__main__":
    main()
