"""The explanation page renders in headless Chromium: screenshot, every image and recording loaded, no console error.

Skips where the ``chromium`` binary is absent (.ci/run installs Debian's ``chromium``).
"""
import io
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import tone

from core import explain_report

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="the chromium binary is not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]


def chromium(tmp_path, page, *extra):
    """(stdout, stderr) of headless Chromium opening ``page`` with its own throw-away profile."""
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, page.as_uri()],
                         capture_output=True, text=True, timeout=90, check=False)
    return run.stdout, run.stderr


def console_lines(log: str) -> list[str]:
    """Chromium's log lines for page console messages and uncaught exceptions (``INFO:CONSOLE:<line>] "..."``)."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def wav(y):
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, y, 16000, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_page(tmp_path, png_bytes):
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    saliency = np.zeros_like(x)
    saliency[10:20, 4:8] = 1.0
    figures = [("log-Mel", explain_report.overlay_png(x, None, 0.032, 0.0, "log-Mel")), ("saliency", png_bytes)]
    sounds = [("original", [("window", wav(tone("chirp", 0.5)))]),
              ("saliency", [("binary mask", wav(0.5 * tone("chirp", 0.5))), ("soft mask", wav(tone("moo", 0.5)))])]
    table = pd.DataFrame({"method": ["saliency", "random"], "AD": [1.5, 40.0]})
    page = tmp_path / "report.html"
    page.write_text(explain_report.render_page("Why 'bird'? <test>", ["file: x.wav"], figures, sounds, table,
                                               ["a note"]))
    return page, explain_report.overlay_png(x, saliency, 0.032, 0.0, "saliency")


def test_page_renders_with_every_image_and_recording(tmp_path):
    _, overlay = write_page(tmp_path, b"")
    page, _ = write_page(tmp_path, overlay)
    dom, log = chromium(tmp_path, page, "--dump-dom")
    assert 'data-check="ok images=2 audio=3"' in dom
    assert "Why 'bird'? &lt;test&gt;" in dom
    assert console_lines(log) == []
    shot = tmp_path / "shot.png"
    chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1200,1600")
    import matplotlib.image as mpimg
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (1600, 1200) and pixels[..., :3].std() > 0.05   # not a blank page


def test_the_check_reports_a_broken_image(tmp_path):
    page, _ = write_page(tmp_path, b"not a png")
    dom, log = chromium(tmp_path, page, "--dump-dom")
    assert 'data-check="failed saliency"' in dom
    assert any("failed to load saliency" in line for line in console_lines(log))
