"""Every dashboard page and both kinds of HTML report in headless Chromium: loads with no
console errors and no request leaving the server, and every plot has drawn its series
(coloured pixels on each uPlot canvas); screenshots are kept (``STREAMPROV_SCREENSHOTS`` or the
test's temp dir)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from streamprov.observe.report import compare_report, replay_report, tuning_report
from tests.observe.demo import Demo

COLOURED_PIXELS = """() => Array.from(document.querySelectorAll('.uplot canvas')).map((c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
    if (d[i + 3] > 0 && hi - lo > 40) n++;
  }
  return n;
})"""


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("STREAMPROV_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        return Path(where)
    return tmp_path_factory.mktemp("screenshots")


def load(browser: Any, url: str, shot: Path, allowed_prefix: str) -> tuple[list[int], str]:
    """Open ``url``, wait for the page's script to finish, screenshot it; the coloured pixel
    count of each plot and the page's text."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith((allowed_prefix, "data:"))
            else outside.append(r.url))
    try:
        page.goto(url)
        page.wait_for_selector("body[data-ready]", timeout=20_000)
        text = page.inner_text("main")
        assert page.get_attribute("body", "data-ready") == "1", text
        pixels: list[int] = page.evaluate(COLOURED_PIXELS)
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    assert not errors, errors
    assert not outside, f"requests left the server: {outside}"
    assert shot.stat().st_size > 10_000
    return pixels, text


def pages(demo: Demo) -> list[tuple[str, str, int]]:
    r0, r1 = (d["replayId"] for d in demo.replays)
    return [
        ("overview", "/ui", 1),
        ("record", "/ui/record?stream=demo", 1),
        ("replay", f"/ui/replay?id={r0}", 2),
        ("compare", f"/ui/compare?ids={r0},{r1}", 2),
        ("clocks", "/ui/clocks?stream=demo", 3),
        ("scaling", "/ui/scaling", 1),
        ("tune", f"/ui/tune?id={demo.tuning['tuneId']}", 1),
    ]


def test_dashboard_pages(browser: Any, served: str, demo: Demo, shots: Path) -> None:
    for name, path, plots in pages(demo):
        pixels, text = load(browser, served + path, shots / f"ui-{name}.png", served)
        assert len(pixels) == plots, (name, pixels)
        assert all(n > 50 for n in pixels), (name, pixels)
        if name == "overview":
            assert "demo" in text and demo.replays[0]["replayId"] in text
        if name == "record":
            assert "since previous" in text and "demo/parse/" in text
        if name == "clocks":  # the last run's sync histories: offsets and bounds over time
            assert "each sync round" in text and "demo/parse/0" in text
        if name == "compare":
            assert all(d["replayId"] in text for d in demo.replays)


def test_self_contained_reports(browser: Any, demo: Demo, shots: Path, tmp_path: Path) -> None:
    app = demo.app()
    reports = {
        "replay": (replay_report(app, demo.replays[0]), 2),
        "compare": (compare_report(app, demo.replays), 2),
        "tune": (tuning_report(app, demo.tuning, []), 3),
    }
    for name, (page, plots) in reports.items():
        path = tmp_path / f"{name}.html"
        path.write_text(page)
        pixels, _ = load(browser, path.as_uri(), shots / f"report-{name}.png",
                         path.as_uri())
        assert len(pixels) == plots, (name, pixels)
        assert all(n > 50 for n in pixels), (name, pixels)
