"""Exported HTML renders offline: headless Debian chromium opens the page with every non-file
request blocked; each Plotly figure must have drawn SVG marks with a real size, the markdown maths
must show as laid-out MathML (no raw TeX), and the page must ask the network for nothing. Where
Firefox is installed, the maths is checked in it too (driven over WebDriver BiDi, which Firefox
serves itself: no geckodriver).

`assert_plotly_figures_drawn(html_path, min_figures)` and `assert_formulas_rendered(html_path,
min_formulas)` are reusable for the real report's pages."""

import itertools
import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from helpers import stop
from workbench.report import WIDGET_NOTE, export_html, network_references, run_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
# Plotly's drawn marks: anything in a trace layer (heatmap images, lines, markers, bars; each
# cartesian trace layer is a `g.<type>layer.mlayer`) or a pie slice. Axes and grid lines are not marks.
MARKS = ".main-svg .mlayer image, .main-svg .mlayer path, .main-svg .pielayer path"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# every <math> element's box and text, as a JavaScript expression (chromium and Firefox checks alike)
MATH_BOXES = """[...document.querySelectorAll('math')].map(m => {
    const r = m.getBoundingClientRect();
    return {display: m.getAttribute('display'), width: r.width, height: r.height, text: m.textContent};
})"""
RAW_TEX = ("$$", "\\frac", "\\mathrm", "\\sqrt")  # TeX that no converter touched, if seen in a page's text

pytestmark = pytest.mark.browser


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = "Debian chromium not installed: run `apt-get install -y chromium` (make test does this when run as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the browser tests. {message}")
    pytest.skip(message)


@contextmanager
def offline_page(html_path: str | Path):
    """Yield (page, blocked URLs, page errors) for `html_path` opened in headless chromium with every
    request other than file:// and data: aborted and recorded."""
    from playwright.sync_api import sync_playwright

    blocked, page_errors = [], []

    def offline(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.route("**/*", offline)
            page.goto(Path(html_path).resolve().as_uri(), wait_until="load", timeout=60_000)
            yield page, blocked, page_errors
        finally:
            browser.close()


def assert_formulas_rendered(html_path: str | Path, min_formulas: int) -> list[dict]:
    """Open `html_path` offline and check its maths: at least `min_formulas` MathML elements laid out
    with a real size, no TeX left in the visible text, and no request for the network at all.

    Returns one dict per <math>: display, width, height, and its text.
    """
    with offline_page(html_path) as (page, blocked, page_errors):
        formulas = page.evaluate(f"() => {MATH_BOXES}")
        visible = page.evaluate("() => document.body.innerText")
    assert not blocked and not page_errors, f"blocked requests: {blocked}; page errors: {page_errors}"
    assert len(formulas) >= min_formulas, f"{len(formulas)} <math> elements, expected >= {min_formulas}"
    flat = [f for f in formulas if not (f["width"] > 0 and f["height"] > 0)]
    assert not flat, f"formulas not laid out: {flat}"
    raw_tex = [marker for marker in RAW_TEX if marker in visible]
    assert not raw_tex, f"raw TeX visible in the page: {raw_tex}"
    return formulas


def assert_plotly_figures_drawn(html_path: str | Path, min_figures: int,
                                screenshot: str | Path | None = None) -> list[dict]:
    """Open `html_path` offline in headless chromium and check every Plotly figure drew.

    Requests other than file:// and data: are aborted and recorded, so a figure that needs the
    network fails here. Returns one dict per figure: its size, trace types and drawn-mark count.
    """
    with offline_page(html_path) as (page, blocked, page_errors):
        n_divs = page.locator(".plotly-graph-div").count()
        assert n_divs >= min_figures, f"{n_divs} Plotly figures in the page, expected >= {min_figures}"
        try:
            page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n_divs}",
                                   timeout=30_000)
        except Exception:  # the assertions below say what is missing
            pass
        figures = page.evaluate("""(marks) => [...document.querySelectorAll('.plotly-graph-div')].map(div => {
            const box = el => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
            const svg = div.querySelector('.main-svg');
            return {id: div.id, drawn: div.classList.contains('js-plotly-plot'),
                    size: svg ? box(svg) : [0, 0],
                    traces: (div.data || []).map(t => t.type || 'scatter'),
                    marks: [...div.querySelectorAll(marks)].filter(el => box(el)[0] > 0 && box(el)[1] > 0).length,
                    heatmap_images: [...div.querySelectorAll('.hm image')].filter(el => box(el)[0] > 0).length,
                    lines: [...div.querySelectorAll('path.js-line')].filter(el => box(el)[0] > 0).length};
        })""", MARKS)
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
    context = f"blocked requests: {blocked}; page errors: {page_errors}"
    assert not page_errors, context
    for fig in figures:
        assert fig["drawn"] and min(fig["size"]) > 0, f"figure {fig} did not draw; {context}"
        assert fig["marks"] > 0, f"figure {fig} has no visible marks; {context}"
    assert not blocked, context  # a report page asks the network for nothing
    return figures


@pytest.fixture(scope="module")
def exported_page(tmp_path_factory):
    require_chromium()  # before paying for a kernel
    root = tmp_path_factory.mktemp("browser")
    params = new_code_cell('profile = "default"\nrun_dir = "unset"')
    params.metadata["tags"] = ["parameters"]
    maths = new_markdown_cell("Loss $-\\log p(x_{t+1} \\mid x_{\\le t})$, costs \\$5, code `$HOME`:\n\n"
                              "$$\\mathrm{softmax}\\!\\left(\\frac{QK^\\top}{\\sqrt{d_k}}\\right) V$$")
    nb = new_notebook(cells=[maths, params, new_code_cell("import ipywidgets\nipywidgets.IntSlider(value=3)"), new_code_cell(
        "import plotly.graph_objects as go, plotly.io as pio\n"
        'pio.renderers.default = "plotly_mimetype+notebook"\n'
        'go.Figure(go.Heatmap(z=[[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]], colorscale="Viridis"),\n'
        '          layout_title_text="attention").show()\n'
        'go.Figure(go.Scatter(y=[4.2, 3.1, 2.6, 2.3, 2.2], mode="lines"), layout_title_text="loss").show()')])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks" / "01_figures.ipynb")
    run_report(root / "notebooks", root / "out", profile="smoke", timeout=120)
    return root / "out" / "01_figures.html"


def test_heatmap_and_line_chart_render_offline(exported_page, tmp_path):
    screenshot = tmp_path / "page.png"
    figures = assert_plotly_figures_drawn(exported_page, min_figures=2, screenshot=screenshot)
    assert [f["traces"] for f in figures] == [["heatmap"], ["scatter"]]
    assert figures[0]["heatmap_images"] == 1, figures[0]
    assert figures[1]["lines"] >= 1, figures[1]
    assert screenshot.stat().st_size > 10_000


def test_a_page_without_figures_fails_the_check(tmp_path):
    require_chromium()
    page = tmp_path / "empty.html"
    page.write_text("<!DOCTYPE html><html><body><p>no figures</p></body></html>")
    with pytest.raises(AssertionError, match="0 Plotly figures"):
        assert_plotly_figures_drawn(page, min_figures=1)


def test_the_page_asks_the_network_for_nothing_and_its_maths_renders(exported_page):
    page = exported_page.read_text(encoding="utf-8")
    assert network_references(page) == []
    inline, display = assert_formulas_rendered(exported_page, min_formulas=2)
    assert (inline["display"], display["display"]) == ("inline", "block")
    assert "softmax" in display["text"] and "QK" in display["text"]
    assert display["height"] > 1.5 * inline["height"]  # a fraction stacks: the display formula is taller
    assert "costs $5, code $HOME" in page.replace("<code>", "").replace("</code>", "")  # text, not maths
    assert WIDGET_NOTE in page and "widget-state" not in page  # a widget says where to use it


def test_formulas_of_01_attention_render_as_mathml_offline(tmp_path):
    require_chromium()
    page = export_html(NOTEBOOKS / "01_attention.ipynb", tmp_path / "01_attention.html")  # markdown needs no kernel
    formulas = assert_formulas_rendered(page, min_formulas=10)
    attention = next(f for f in formulas if f["display"] == "block")
    assert attention["text"].startswith("Attention(Q,K,V)=softmax")
    assert network_references(page.read_text(encoding="utf-8")) == []


# ------------------------------------------------------------------------------------------ Firefox
FIREFOX = next((Path(p) for p in map(shutil.which, ("firefox-esr", "firefox")) if p), None)


class FirefoxPage:
    """One tab of a headless Firefox, driven over WebDriver BiDi: `open(url)`, then `run(expression)`.

    `requests` lists every URL other than file:, data: and about: that the page asked for since it
    was opened, `errors` its JavaScript errors (both from BiDi events)."""

    def __init__(self, ws):
        self.ws, self.ids, self.events = ws, itertools.count(1), []
        self.send("session.new", capabilities={})
        self.send("session.subscribe", events=["network.beforeRequestSent", "log.entryAdded"])
        self.context = self.send("browsingContext.getTree")["contexts"][0]["context"]

    def send(self, method: str, **params):
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == i:
                assert message.get("type") != "error", message
                return message["result"]
            self.events.append(message)

    def open(self, url: str) -> None:
        self.events.clear()
        self.send("browsingContext.navigate", context=self.context, url=url, wait="complete")

    def run(self, expression: str):
        """The value of a JavaScript expression (a promise is awaited), through JSON."""
        result = self.send("script.evaluate", expression=f"Promise.resolve({expression}).then(JSON.stringify)",
                           target={"context": self.context}, awaitPromise=True)
        return json.loads(result["result"]["value"])

    @property
    def requests(self) -> list[str]:
        urls = [e["params"]["request"]["url"] for e in self.events if e.get("method") == "network.beforeRequestSent"]
        return [u for u in urls if not u.startswith(("file:", "data:", "about:"))]

    @property
    def errors(self) -> list[str]:
        return [e["params"].get("text") for e in self.events
                if e.get("method") == "log.entryAdded" and e["params"].get("level") == "error"]


@contextmanager
def firefox_offline(tmp_path: Path):
    """A `FirefoxPage` in a headless Firefox whose every request goes to a dead proxy: file:// pages
    load, nothing else can."""
    import websocket  # websocket-client, a JupyterLab dependency

    profile = tmp_path / "firefox-profile"
    profile.mkdir()
    prefs = {"network.proxy.type": 1, "network.proxy.http": "127.0.0.1", "network.proxy.http_port": 9,
             "network.proxy.ssl": "127.0.0.1", "network.proxy.ssl_port": 9,  # the discard port: fails at once
             "network.proxy.no_proxies_on": "", "network.proxy.allow_hijacking_localhost": True}
    (profile / "user.js").write_text("".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in prefs.items()))
    proc = subprocess.Popen([str(FIREFOX), "--headless", "--no-remote", "--profile", str(profile),
                             "--remote-debugging-port", "0", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = None, time.monotonic() + 60
        while url is None and time.monotonic() < deadline:  # "WebDriver BiDi listening on ws://127.0.0.1:PORT"
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            if "WebDriver BiDi listening on" in line:
                url = line.split("listening on", 1)[1].strip()
        assert url, "Firefox did not start WebDriver BiDi"
        # no Origin header: Firefox refuses a handshake that has one
        ws = websocket.create_connection(url.rstrip("/") + "/session", timeout=60, suppress_origin=True)
        try:
            yield FirefoxPage(ws)
        finally:
            ws.close()
    finally:
        stop(proc)


def test_formulas_of_01_attention_render_in_firefox_too(tmp_path):
    if FIREFOX is None:
        pytest.skip("Firefox not installed (apt-get install -y firefox-esr); the maths is checked in chromium")
    html = export_html(NOTEBOOKS / "01_attention.ipynb", tmp_path / "01_attention.html")
    with firefox_offline(tmp_path) as page:
        page.open(html.resolve().as_uri())
        formulas, visible = page.run(MATH_BOXES), page.run("document.body.innerText")
        asked, errors = page.requests, page.errors
        # the watch works: a request the page makes is seen, and fails (nothing is reachable)
        probe = page.run("fetch('https://example.org/').then(() => 'reached', () => 'failed')")
        seen = page.requests
        raw = tmp_path / "raw.html"  # and TeX that nothing converted stays visible, so the check can fail
        raw.write_text("<!DOCTYPE html><html><body><p>$$\\frac{a}{b}$$</p></body></html>")
        page.open(raw.resolve().as_uri())
        raw_formulas, raw_visible = page.run(MATH_BOXES), page.run("document.body.innerText")
    assert not asked and not errors, (asked, errors)
    assert len(formulas) >= 10 and all(f["width"] > 0 and f["height"] > 0 for f in formulas), formulas
    attention = next(f for f in formulas if f["display"] == "block")
    assert attention["text"].startswith("Attention(Q,K,V)=softmax")
    inline = next(f for f in formulas if f["display"] != "block")
    assert attention["height"] > 1.5 * inline["height"]  # its fraction stacks
    assert not [m for m in RAW_TEX if m in visible]
    assert probe == "failed" and seen == ["https://example.org/"]
    assert raw_formulas == [] and "\\frac" in raw_visible
