"""The live side: JupyterLab started as `make lab` starts it, driven by headless Debian chromium.

01_attention runs all its cells with smoke parameters (its parameters cell set in a temporary copy),
then the attention explorer must fit the notebook's output column, redraw its heatmap when a new
sentence is typed into its text box and when its layer slider moves, and show the same heatmap after
the page is reloaded (the kernel still running). This guards the chain a reader relies on in the lab and that no
exported page exercises: ipywidgets, plotly's FigureWidget (an anywidget) and JupyterLab's widget
manager, any of which can drift with a version bump.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from helpers import stop
from test_browser import CHROMIUM, CHROMIUM_ARGS, require_chromium

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The explorer: a VBox holding the text box (a textarea), the sliders and the FigureWidget's plotly div.
EXPLORER = ".widget-vbox:has(.widget-textarea textarea):has(.js-plotly-plot)"
# The explorer's figure and the output area it sits in, in px: wider, it would be clipped with no scroll bar.
WIDTHS = """(sel) => { const plot = document.querySelector(sel + ' .js-plotly-plot');
    return [plot.querySelector('.main-svg').getBoundingClientRect().width,
            plot.closest('.jp-OutputArea-output').clientWidth]; }"""
HEATMAP_DATA = """(sel) => { const div = document.querySelector(sel + ' .js-plotly-plot');
    return div && div.data && div.data[0] ? JSON.stringify({x: div.data[0].x, z: div.data[0].z,
        title: div.layout.title && (div.layout.title.text || div.layout.title)}) : null; }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_settings(folder: Path) -> Path:
    """User settings for the test's JupyterLab: every cell kept in the page (not windowed out of the DOM),
    no news or update checks."""
    settings = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
                "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                    {"fetchNews": "false", "checkForUpdates": False}}
    for relative, values in settings.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free port with a token, serving a copy of 01_attention whose parameters
    cell says profile "smoke" and a run_dir of its own; yields the notebook's URL."""
    require_chromium()
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.read(NOTEBOOKS / "01_attention.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace('profile = "default"', 'profile = "smoke"').replace(
        'run_dir = "../runs/notebooks"', f'run_dir = {str(root / "run")!r}')
    assert 'profile = "smoke"' in params.source and str(root / "run") in params.source, params.source
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks" / "01_attention.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyter", "lab", "--ip=127.0.0.1", "--no-browser", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / 'notebooks'}",
               f"--LabApp.user_settings_dir={lab_settings(root / 'settings')}",
               f"--LabApp.workspaces_dir={root / 'workspaces'}"]
    if os.geteuid() == 0:
        command.append("--allow-root")  # as `make lab` does
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/01_attention.ipynb?token={token}"
    finally:
        stop(server)
        log.close()


def wait_for_redraw(page, previous: str) -> None:
    """Wait until the explorer's heatmap data (as HEATMAP_DATA returns it) differs from `previous`."""
    page.wait_for_function(f"([sel, previous]) => ({HEATMAP_DATA})(sel) !== previous", arg=[EXPLORER, previous],
                           timeout=60_000)


def run_all_cells(page) -> None:
    """Run > Run All Cells once the kernel is idle; again if no cell started (a kernel that was still
    connecting drops the request)."""
    first_prompt = page.locator(".jp-CodeCell .jp-InputPrompt").first
    for attempt in range(3):
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
        page.locator(".jp-Notebook").first.click()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function("(el) => /\\[(\\*|\\d+)\\]/.test(el.textContent)", arg=first_prompt.element_handle(),
                                   timeout=20_000)
            return
        except Exception:
            continue
    pytest.fail("Run All Cells started no cell in three tries")


def test_01_runs_in_jupyterlab_and_the_explorer_redraws_on_typing_and_the_layer_slider_and_survives_a_reload(
        lab, tmp_path):
    from playwright.sync_api import sync_playwright

    outside = []

    def local_only(route):  # the lab needs nothing from outside; a request there fails the test
        if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("**/*", local_only)
        try:
            page.goto(lab, wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            run_all_cells(page)
            page.wait_for_selector(EXPLORER + " .js-plotly-plot .main-svg", timeout=360_000)  # ~30 s unloaded
            page.wait_for_function(f"(sel) => ({HEATMAP_DATA})(sel) !== null", arg=EXPLORER, timeout=30_000)
            before_json = page.evaluate(HEATMAP_DATA, EXPLORER)
            before = json.loads(before_json)
            assert "layer 0" in before["title"], before["title"]
            figure_width, column_width = page.evaluate(WIDTHS, EXPLORER)
            assert 0 < figure_width <= column_width, (figure_width, column_width)

            text_box = page.locator(EXPLORER + " .widget-textarea textarea").first
            text_box.fill("O Romeo, wherefore art thou?")  # shorter than the parameter's sentence
            text_box.blur()  # the text box updates when it loses focus (continuous_update=False)
            wait_for_redraw(page, before_json)
            typed_json = page.evaluate(HEATMAP_DATA, EXPLORER)
            typed = json.loads(typed_json)
            assert typed["x"] != before["x"] and len(typed["z"]) != len(before["z"])  # the new sentence's tokens

            layer_handle = page.locator(EXPLORER + " .widget-slider .noUi-handle").first  # model, layer, head
            layer_handle.focus()
            layer_handle.press("ArrowRight")
            wait_for_redraw(page, typed_json)
            moved_json = page.evaluate(HEATMAP_DATA, EXPLORER)
            moved = json.loads(moved_json)

            # Saved and reloaded, the page opens new views of the kernel's widgets: they must show the
            # last redraw, not the FigureWidget's first (empty) figure.
            page.keyboard.press("Control+s")
            page.wait_for_selector(".jp-mod-current.jp-mod-dirty", state="detached", timeout=30_000)
            page.reload(wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_selector(EXPLORER + " .js-plotly-plot .main-svg", timeout=120_000)
            try:
                page.wait_for_function(f"([sel, shown]) => ({HEATMAP_DATA})(sel) === shown", arg=[EXPLORER, moved_json],
                                       timeout=30_000)
            except Exception:
                pass  # the assertion below says what it shows instead
            reloaded = json.loads(page.evaluate(HEATMAP_DATA, EXPLORER) or "null")
        except Exception:
            page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert "layer 1" in moved["title"], moved["title"]
    assert moved["x"] == typed["x"] and moved["z"] != typed["z"]  # same tokens, another layer's weights
    assert reloaded == moved, f"after a reload the explorer shows {str(reloaded)[:200]}"
    errors = [o for o in outside if "127.0.0.1" not in o]
    assert not errors, f"JupyterLab asked for outside URLs: {errors}"
