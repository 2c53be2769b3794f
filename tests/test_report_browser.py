"""The report in a real browser: Debian's headless Chromium opens it from disk with no
network, runs its scripts, and every figure is drawn (an SVG with marks in each figure), no
script error is logged, and a full-page screenshot is not blank.

The screenshot and the page are kept in ``tmp/test/`` at the top of the repository (or in
``$RFMX_TEST_ARTIFACTS``) to look at.  Skipped, with the reason, only when no Chromium is
found (``.ci/run`` installs Debian's ``chromium`` when it is missing).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from reportdata import make_report_inputs, ok
from badinput import run_cli
from rfmx.report import FIGURES

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("RFMX_TEST_ARTIFACTS") or REPO / "tmp" / "test")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium found (Debian: apt-get install "
                                                          "chromium); the browser test needs one")

# Offline and quiet: no network (every host name fails to resolve), no first-run, sync,
# component updates or background fetches, a fresh profile per run.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=30000"]


def _browser(page: Path, profile: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180)


class _Figures(HTMLParser):
    """Each <figure data-figure>: its attributes and the SVG marks drawn inside it; and <body>'s attributes."""

    def __init__(self):
        super().__init__()
        self.figures: dict[str, dict] = {}
        self.body: dict = {}
        self._open: list[tuple[str, str | None]] = []   # (tag, figure key it belongs to)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        current = self._open[-1][1] if self._open else None
        if tag == "body":
            self.body = attrs
        if tag == "figure" and "data-figure" in attrs:
            current = attrs["data-figure"]
            self.figures[current] = {"attrs": attrs, "svg": 0, "marks": 0}
        if current is not None and tag == "svg":
            self.figures[current]["svg"] += 1
        if current is not None and tag == "g" and "role-mark" in (attrs.get("class") or ""):
            self.figures[current]["marks"] += 1
        if tag not in ("meta", "br", "img", "input", "hr", "link", "path", "rect", "circle", "line"):
            self._open.append((tag, current))

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The report of every table rfmx makes (the timeline with its lifecycle stages, and an
    alerts table), so that every figure the report knows is on the page."""
    folder = tmp_path_factory.mktemp("browser")
    inputs = make_report_inputs(folder)
    alerts = folder / "alerts.csv"
    ok(run_cli("alerts", inputs["orders"], "--every", "month", "--start", "2025-01-01", "-o", alerts))
    out = folder / "report.html"
    ok(run_cli("report", "--scores", inputs["scores"], "--timeline", inputs["timeline"], "--cohorts",
               inputs["cohorts"], "--clusters", inputs["clusters"], "--k-table", inputs["k_table"], "--dendrogram",
               inputs["dendrogram"], "--clv", inputs["clv"], "--calibration", inputs["calibration"], "--alerts", alerts,
               "-o", out))
    return out


def test_every_figure_is_drawn_offline_without_script_errors(page, tmp_path):
    r = _browser(page, tmp_path / "profile", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console                      # no script error, warning or log at all
    dom = _Figures()
    dom.feed(r.stdout)
    expected = [key for key, _, _ in FIGURES]
    assert list(dom.figures) == expected
    assert dom.body.get("data-done") == "1", "the drawing code did not finish"
    assert dom.body.get("data-errors") == "0"
    assert dom.body.get("data-rendered") == str(len(expected))
    for key, fig in dom.figures.items():
        assert fig["attrs"].get("data-state") == "rendered", key
        assert fig["svg"] >= 1 and fig["marks"] >= 1, (key, fig)
    assert 'id="rfmx-errors" role="alert"></div>' in r.stdout      # the error box stayed empty
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(page, ARTIFACTS / "report.html")


def test_full_page_screenshot_is_not_blank(page, tmp_path):
    from PIL import Image

    r = _browser(page, tmp_path / "measure", "--dump-dom")
    height = int(re.search(r'<body[^>]*data-height="(\d+)"', r.stdout).group(1))
    assert height > 2000                               # a page of many figures, not an error line
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    r = _browser(page, tmp_path / "shoot", f"--window-size=1280,{height}", f"--screenshot={shot}")
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, height)
        pixels = np.asarray(im.convert("RGB").resize((320, max(1, height // 4))), dtype=np.int64)
    flat = pixels.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    ink = np.abs(pixels - background).sum(axis=2) > 60
    assert ink.mean() > 0.05, ink.mean()              # figures, not an empty page
    assert len(colours) > 200                         # colour scales, text, lines
    # every band of the page has something drawn in it: no figure area is blank
    inked_rows = (np.abs(pixels - background).sum(axis=2) > 0).sum(axis=1) > 8
    longest_blank = max(len(run) for run in "".join("1" if x else "0" for x in inked_rows).split("1"))
    assert longest_blank * 4 < 400, longest_blank * 4  # no stretch of 400 px without content
