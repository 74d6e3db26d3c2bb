"""The explorer in a real headless Chromium (Debian ``chromium``, driven by Playwright).

Starts ``streamlit run interp/app/explorer.py`` on a free localhost port, opens every page, waits for
its figures, saves a full-page screenshot under ``test-artifacts/app/`` and checks that no
error or exception element is on the page. Skipped when chromium is missing, unless
``INTERP_REQUIRE_BROWSER=1`` (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "app"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# (url path, page title, module it needs or None, a selector that means "content is drawn")
PAGES = [
    ("", "Model & prompts", None, "[data-testid='stMetric']"),
    ("attention", "Attention", None, ".js-plotly-plot"),
    ("patching", "Patching", "interp.patching", ".js-plotly-plot"),
    ("ablation", "Ablation", "interp.ablation", ".js-plotly-plot"),
    ("lens", "Logit lens", None, ".js-plotly-plot"),
    ("dla", "Direct logit attribution", None, ".js-plotly-plot"),
    ("retrieval", "Retrieval heads", "interp.retrieval", ".js-plotly-plot"),
    ("circuit", "Circuit", "interp.attribution", ".js-plotly-plot"),
    ("training", "Training", "interp.dynamics", ".js-plotly-plot"),
    ("export", "Export report", None, "[data-testid='stDownloadButton']"),
]
ERRORS = "[data-testid='stException'], [data-testid='stAlertContentError']"


def _require_browser():
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the Python package playwright (pip install -e '.[dev]')")
    if not Path(CHROMIUM).is_file():
        missing.append("Debian chromium (apt-get install chromium)")
    if missing:
        msg = "browser test needs " + " and ".join(missing)
        if os.environ.get("INTERP_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " (INTERP_REQUIRE_BROWSER=1)")
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    _require_browser()
    port = _free_port()
    env = dict(os.environ, INTERP_MODEL=os.environ.get("INTERP_MODEL", "ioi"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS.parent / "streamlit.log", "w")  # noqa: SIM115 (closed in finally)
    # started through the CLI (`interp app`), which runs `streamlit run interp/app/explorer.py`
    cmd = [sys.executable, "-c", "from interp.cli import app; app()", "app", "--model",
           env["INTERP_MODEL"], "--port", str(port), "--address", "127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start; see {ARTIFACTS.parent / 'streamlit.log'}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the CLI and its streamlit child
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _wait_idle(page, timeout_ms: int) -> None:
    """Wait until the script run is over (no 'Running...' status widget)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)


def test_every_page_renders_without_errors(server, browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for i, (path, title, needs, ready) in enumerate(PAGES):
        if i == 0:
            page.goto(f"{server}/{path}", wait_until="domcontentloaded")
        else:  # navigate inside the app (one session, so the export sees the visited pages)
            page.locator(f"[data-testid='stSidebarNav'] a:has-text('{title}')").first.click()
        # the first visit loads the model (seconds); later ones reuse the cache
        page.wait_for_selector(f"h1:has-text('{title}')", timeout=120_000)
        if needs is not None and importlib.util.find_spec(needs) is None:
            ready = "[data-testid='stAlertContentWarning']"
        page.wait_for_selector(ready, timeout=120_000)
        _wait_idle(page, 120_000)
        page.wait_for_timeout(500)  # let plotly finish drawing
        page.screenshot(path=str(ARTIFACTS / f"{i}_{path or 'model'}.png"), full_page=True)
        n_err = page.locator(ERRORS).count()
        if n_err:
            problems.append(f"{title}: {page.locator(ERRORS).first.inner_text()[:300]}")
        if ready == ".js-plotly-plot":
            assert page.locator(".js-plotly-plot").count() >= 1, f"{title} shows no figure"
    ctx.close()
    assert not problems, problems


def _open(browser, server, title: str):
    """A 1400 px page on the app's ``title`` page, reached through the app's own navigation
    (a direct URL before the first run shows Streamlit's file-based page list instead)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(server, wait_until="domcontentloaded")
    page.wait_for_selector("h1:has-text('Model & prompts')", timeout=120_000)
    _wait_idle(page, 120_000)
    page.locator(f"[data-testid='stSidebarNav'] a:has-text('{title}')").first.click()
    page.wait_for_selector(f"h1:has-text('{title}')", timeout=120_000)
    page.wait_for_selector(".js-plotly-plot", timeout=120_000)
    _wait_idle(page, 120_000)
    page.wait_for_timeout(800)
    return ctx, page


def test_clicking_a_circuit_node_selects_it(server, browser):
    """A click on a node of the circuit graph selects that head for every page: the circuit
    page shows its attention and knockout effect, and the sidebar names it."""
    ctx, page = _open(browser, server, "Circuit")
    nodes = page.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").last
    nodes.locator("path.point").nth(1).click(force=True)  # node 1: a0.h0, head L0H0
    page.wait_for_selector("h3:has-text('Selected: L0H0')", timeout=120_000)
    _wait_idle(page, 120_000)
    page.wait_for_timeout(500)
    page.wait_for_selector("[data-testid='stSidebar'] strong:has-text('L0H0')", timeout=60_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "circuit_selected.png"), full_page=True)
    assert page.locator(ERRORS).count() == 0
    ctx.close()


def test_clicking_a_heatmap_cell_selects_the_head_on_other_pages(server, browser):
    """Click cell (L1, H2) of the ablation page's knockout heatmap; the Attention page then opens
    on that head."""
    from interp.models import describe, load_model

    info = describe(load_model("ioi"))
    ctx, page = _open(browser, server, "Ablation")
    drag = page.locator(".js-plotly-plot").first.locator("rect.nsewdrag").first
    box = drag.bounding_box()
    x = box["x"] + box["width"] * (2.5 / info.n_heads)  # column H2
    y = box["y"] + box["height"] * (1.5 / info.n_layers)  # row L1 (rows run top-down)
    page.mouse.move(x, y)
    page.wait_for_timeout(300)
    page.mouse.click(x, y)
    page.wait_for_selector("[data-testid='stSidebar'] strong:has-text('L1H2')", timeout=60_000)
    _wait_idle(page, 120_000)
    page.locator("[data-testid='stSidebarNav'] a:has-text('Attention')").first.click()
    page.wait_for_selector("h1:has-text('Attention')", timeout=120_000)
    _wait_idle(page, 120_000)
    page.wait_for_selector("text=L1H2 on example 0", timeout=60_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "attention_after_heatmap_click.png"), full_page=True)
    assert page.locator(ERRORS).count() == 0
    ctx.close()
