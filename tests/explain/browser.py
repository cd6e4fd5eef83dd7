"""Headless Chromium for the explorer and server tests: Playwright driving the system chromium.

No browser is downloaded: Playwright launches the executable found as ``$ATTNLAB_CHROMIUM``,
``chromium`` or ``chromium-browser`` (Debian: ``apt-get install chromium``). Tests that use the
``browser`` fixture skip, saying why, when Playwright or the executable is missing.

Import the fixture into a test module: ``from .browser import Page, browser``.
"""

from __future__ import annotations

import os
import shutil

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# The number of canvas pixels that are not near-white.
INK_JS = """(sel) => {
  const c = document.querySelector(sel);
  if (!c || !c.width || !c.height) return 0;
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 240 || d[i + 1] < 240 || d[i + 2] < 240) n++;
  return n;
}"""


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None."""
    env = os.environ.get("ATTNLAB_CHROMIUM")
    if env:
        return shutil.which(env) or (env if os.path.isfile(env) else None)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Playwright ``Browser``) for the module; skips if there is none."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no `playwright install` needed)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium executable (apt-get install chromium, or set ATTNLAB_CHROMIUM)")
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        except Exception as e:  # noqa: BLE001 - a broken install should skip, not error
            pytest.skip(f"chromium at {exe} does not start under Playwright: {e}")
        yield b
        b.close()


class Page:
    """A page that records console errors and uncaught exceptions."""

    def __init__(self, browser, width: int = 1200, height: int = 900):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def wait_ready(self, timeout_s: float = 30) -> dict:
        """Wait for ``window.attnlabReady``; returns ``window.attnlabStats``."""
        self.page.wait_for_function("window.attnlabReady === true", timeout=timeout_s * 1000)
        return self.stats()

    def stats(self) -> dict:
        return self.page.evaluate("JSON.parse(JSON.stringify(window.attnlabStats))")

    def ink(self, selector: str) -> int:
        return self.page.evaluate(INK_JS, selector)

    def close(self):
        self.page.close()
