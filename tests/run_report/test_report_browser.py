"""The run report in a real browser: Debian's headless Chromium, driven by playwright (its own
browser download is never used). Every chart must render, with no console error and no network
request; the screenshot is kept for a person to look at ($FTX_TEST_ARTIFACTS, default
tests/.artifacts). CI installs chromium (`make chromium`), so there the test never skips."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from ftx.run_report import write_report
from ftx.run_report.charts import CHARTS, HEIGHT, WIDTH

pytestmark = [pytest.mark.browser, pytest.mark.mlx]

CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(os.environ.get("FTX_TEST_ARTIFACTS", Path(__file__).parents[1] / ".artifacts"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run runs `make chromium` first")
        pytest.skip("Debian's chromium is not installed here (make chromium)")
    return CHROMIUM


def test_every_chart_renders_offline_without_errors(
    chromium: str, run_dir: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    report = write_report(run_dir, out=tmp_path / "report.html")
    url = report.html.resolve().as_uri()
    console: list[str] = []
    requests: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "run_report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url, wait_until="load")
            for name in CHARTS:
                page.wait_for_selector(f"#chart-{name} .main-svg", timeout=10_000)
                traces = page.locator(f"#chart-{name} .trace").count()
                assert traces >= 1, f"chart {name} drew no trace"
            markers = page.locator("#chart-loss .annotation-text").all_text_contents()
            generations = page.locator("table pre").count()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert [m for m in console if m.startswith(("error", "page error"))] == [], console
    assert requests == [url]  # the page itself, nothing else
    best = json.loads((run_dir / "manifest.json").read_text())["report"]["best_step"]
    assert {f"best step {best}", "early stopping"} <= set(markers)
    assert generations >= 2 * 4  # prompt, reference, base and adapted of each example
    assert shot.read_bytes().startswith(PNG_MAGIC)


def test_png_writes_every_chart_as_an_image(chromium: str, run_dir: Path, tmp_path: Path) -> None:
    report = write_report(run_dir, out=tmp_path / "report.html", png=True)
    assert [p.name for p in report.images] == [f"report-{name}.png" for name in CHARTS]
    for image in report.images:
        head = image.read_bytes()[:24]
        assert head.startswith(PNG_MAGIC), image
        assert struct.unpack(">II", head[16:24]) == (WIDTH, HEIGHT), image
