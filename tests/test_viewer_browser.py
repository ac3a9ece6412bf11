"""The live page in a real headless Chromium while a real autofit fit runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autofit_jaxviz.history import read_index, read_status
from tests import browser
from tests.viewer_helpers import make_fit, served

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


@pytest.fixture
def page_browser():
    reason = browser.missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install the browser: {reason}")
        pytest.skip(reason)
    with browser.chromium() as driver:
        yield driver


def wait_for(driver, script: str, timeout: float = 120.0):
    """Evaluate ``script`` in the page until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never satisfied: {script}")
        time.sleep(0.05)


def test_the_page_shows_a_running_fit_change_without_a_reload(tmp_path, page_browser):
    output = tmp_path / "output"
    output.mkdir()
    with served(output) as url:
        page_browser.get(url)
        loaded_at = page_browser.execute_script("return window.jaxvizLoadedAt")
        # the page is open before the fit starts: everything after comes by push
        fit = subprocess.Popen([sys.executable, str(HERE / "viewer_fit.py"), str(output),
                                "browser_fit"], env={**os.environ, "MPLBACKEND": "Agg"})
        try:
            shown_while_running = wait_for(
                page_browser,
                "const s = new Set(window.jaxvizShown.map(e => e.n));"
                "return s.size >= 3 ? [...s] : null;")
            fit_running = fit.poll() is None
            assert fit.wait(300) == 0
        finally:
            if fit.poll() is None:
                fit.kill()
        folder = next(output.rglob("fit_history"))
        status = read_status(folder)
        assert status["state"] == "finished"
        entries = read_index(folder)
        # the page ends on the fit's last picture, and says the fit finished
        wait_for(page_browser, f"return window.jaxvizShown.length && "
                 f"window.jaxvizShown.at(-1).n === {entries[-1]['n']};")
        wait_for(page_browser, "return document.querySelector('.fit .state').textContent "
                 "=== 'finished';")
        shown = page_browser.execute_script("return window.jaxvizShown")
        # never reloaded: the same page load, one navigation
        assert page_browser.execute_script("return window.jaxvizLoadedAt") == loaded_at
        assert page_browser.execute_script(
            "return performance.getEntriesByType('navigation').length") == 1
        # at least two changes of picture were shown before the fit wrote its end
        before_end = {e["n"] for e in shown if e["at"] / 1000 < status["updated"]}
        assert len(before_end) >= 3 or fit_running, (shown, status["updated"])
        assert len(shown_while_running) >= 3
        # what the page showed is what is on disk
        image = page_browser.execute_script(
            "const img = document.getElementById('picture');"
            "return [img.naturalWidth, img.naturalHeight, img.src];")
        assert image[0] > 0 and image[1] > 0 and image[2].endswith(entries[-1]["file"])


def test_the_slider_scrubs_the_history(tmp_path, page_browser):
    make_fit(tmp_path, "search/abc", 6).finish()
    with served(tmp_path) as url:
        page_browser.get(url)
        wait_for(page_browser, "return window.jaxvizShown.length && "
                 "window.jaxvizShown.at(-1).n === 6;")
        page_browser.execute_script(
            "const s = document.getElementById('slider'); s.value = 1;"
            "s.dispatchEvent(new Event('input'));")
        wait_for(page_browser, "return window.jaxvizShown.at(-1).n === 2;")
        assert not page_browser.execute_script("return document.getElementById('follow').checked")
        caption = page_browser.execute_script(
            "return document.getElementById('caption').textContent")
        assert "picture 2" in caption and "step 10" in caption
        points = page_browser.execute_script(
            "return document.querySelector('#chart polyline').getAttribute('points')")
        assert len(points.split()) == 6  # one point of the chart per picture
