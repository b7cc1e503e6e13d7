"""The web console in a real browser (issue 23): Debian's chromium driven by Playwright.

Starts the server (target/debug/replpool unless --binary says otherwise) on a free loopback
port with a bearer token, opens the console, and does what a person would: types the token,
creates a session, runs cells (a value, a plot, a DataFrame, an error, an interrupted sleep,
a CSV uploaded through the file input), runs one with the keyboard only, downloads the
notebook and validates it with nbformat. A screenshot of each step goes to target/e2e/.

    target/e2e-venv/bin/python tests/e2e/console.py [--binary PATH]   (`make test-e2e`)
"""

import argparse
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import threading

import nbformat
from playwright.sync_api import expect, sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "e2e-token-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags chromium keeps dialling Google's hosts, which this
# machine's closed network refuses; --no-sandbox because the test runs as root.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "target" / "e2e"
# Long enough for a cold plot (matplotlib's first figure) on a busy 2-core machine.
CELL_TIMEOUT_MS = 60_000


def config(python):
    return f"""
[python]
executable = "{python}"

[pool]
warm_workers = 1

[auth]
tokens = ["{TOKEN}"]

[sandbox]
network = "none"
"""


class Server:
    """A replpool server of this run's; `stop` ends it by pid (SIGTERM, then SIGKILL)."""

    def __init__(self, binary, config_path):
        env = dict(os.environ, REPLPOOL_LOG="warn")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--bind", "127.0.0.1:0", "--config", str(config_path)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.base = None
        for line in self.process.stdout:
            if line.startswith("listening on "):
                self.base = line.removeprefix("listening on ").strip()
                break
        if self.base is None:
            self.stop()
            raise RuntimeError("the server exited before listening")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self):
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Steps:
    def __init__(self, page):
        self.page = page
        self.n = 0

    def shot(self, name):
        self.n += 1
        path = SHOTS / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"  ok {self.n:02d} {name}", flush=True)


def run_cell(page, code):
    """Types `code` into the last cell and runs it with Shift-Enter; returns that cell."""
    # Fixed by index: Shift-Enter adds a cell, and `.last` would then name the new one.
    cell = page.locator(".cell").nth(page.locator(".cell").count() - 1)
    editor = cell.locator("textarea")
    editor.fill(code)
    editor.press("Shift+Enter")
    return cell


def finished(cell):
    expect(cell.locator(".prompt")).to_have_text(
        re.compile(r"In \[(\d+|!)\]:"), timeout=CELL_TIMEOUT_MS
    )


def drive(base, page, steps, downloads):
    page.goto(f"{base}/")
    expect(page.locator("#status")).to_contain_text("status:")
    # Without a token the list answers 401 and the page asks for one.
    expect(page.locator("#auth-msg")).to_contain_text("needs a token")
    steps.shot("needs-token")

    page.get_by_label("Bearer token").fill(TOKEN)
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#auth-msg")).to_be_empty()
    assert TOKEN not in page.url
    assert page.evaluate("Object.keys(localStorage).length") == 0
    steps.shot("token")

    page.get_by_role("button", name="Create session").click()
    expect(page.locator("#session-view")).to_be_visible()
    session_id = page.locator("#view-id").inner_text()
    expect(page.locator("#session-table tbody tr.current")).to_contain_text(session_id)
    steps.shot("session-created")

    cell = run_cell(page, "x = 41")
    finished(cell)
    expect(cell.locator(".prompt")).to_have_text("In [1]:")
    cell = run_cell(page, "x + 1")
    finished(cell)
    expect(cell.locator(".prompt")).to_have_text("In [2]:")
    expect(cell.locator(".output")).to_have_text("42")
    steps.shot("x-plus-1")

    cell = run_cell(
        page,
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('squares')\nplt.show()",
    )
    finished(cell)
    img = cell.locator(".output img")
    expect(img).to_have_count(1)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
    steps.shot("plot")

    cell = run_cell(
        page,
        "import pandas as pd\ndf = pd.DataFrame({'a': range(10), 'b': [i * i for i in range(10)]})\ndf.head()",
    )
    finished(cell)
    table = cell.locator(".output table")
    expect(table).to_have_count(1)
    expect(table.locator("tbody tr")).to_have_count(5)
    expect(table.locator("thead")).to_contain_text("b")
    steps.shot("dataframe")

    cell = run_cell(page, "1/0")
    finished(cell)
    error = cell.locator(".output .error")
    expect(error).to_contain_text("ZeroDivisionError")
    expect(error).to_contain_text("category: runtime")
    assert "\x1b" not in error.inner_text()
    steps.shot("error")

    cell = run_cell(page, "import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
    stop = cell.get_by_role("button", name="Interrupt")
    expect(stop).to_be_visible()
    # Interrupted only once it runs: its streamed line says it does.
    expect(cell.locator(".output .stdout")).to_have_text("sleeping\n", timeout=CELL_TIMEOUT_MS)
    stop.click()
    expect(cell.locator(".output .error")).to_contain_text("category: interrupted", timeout=15_000)
    steps.shot("interrupted")

    with tempfile.TemporaryDirectory() as tmp:
        csv = pathlib.Path(tmp) / "scores.csv"
        csv.write_text("name,score\nada,3\nbob,4\n")
        page.locator("#file-input").set_input_files(str(csv))
    expect(page.locator("#file-list")).to_contain_text("scores.csv")
    cell = run_cell(page, "import pandas as pd\nint(pd.read_csv('scores.csv')['score'].sum())")
    finished(cell)
    expect(cell.locator(".output")).to_have_text("7")
    steps.shot("csv")

    # Keyboard only: focus the last editor, type, Shift-Enter; then leave it with Escape, Tab.
    editor = page.locator(".cell").last.locator("textarea")
    editor.focus()
    page.keyboard.type("6 * 7")
    page.keyboard.press("Shift+Enter")
    cell = page.locator(".cell").nth(-2)
    finished(cell)
    expect(cell.locator(".output")).to_have_text("42")
    # The next cell's editor has the focus; Escape then Tab leaves it (no keyboard trap).
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") != "TEXTAREA"
    steps.shot("keyboard")

    with page.expect_download() as info:
        page.get_by_role("button", name=f"Download session {session_id} as a notebook").click()
    download = info.value
    path = downloads / "session.ipynb"
    download.save_as(path)
    notebook = nbformat.read(str(path), as_version=4)
    nbformat.validate(notebook)
    sources = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert "x + 1" in sources, sources
    steps.shot("notebook")

    page.set_viewport_size({"width": 420, "height": 800})
    page.locator("#cells").scroll_into_view_if_needed()
    # One column, and nothing wider than the window (a wide table scrolls in its own box).
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 420, f"the page is {width} px wide in a 420 px window"
    steps.shot("narrow")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / "final.png"), full_page=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=str(ROOT / "target" / "debug" / "replpool"))
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="the workers' interpreter (needs pandas and matplotlib)")
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        print(f"no {CHROMIUM}: apt-get install chromium", file=sys.stderr)
        return 2
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="replpool-e2e-") as tmp:
        tmp = pathlib.Path(tmp)
        config_path = tmp / "config.toml"
        config_path.write_text(config(args.python))
        server = Server(args.binary, config_path)
        try:
            print(f"==> replpool at {server.base}; chromium {CHROMIUM}", flush=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    context = browser.new_context(
                        viewport={"width": 1280, "height": 800}, accept_downloads=True
                    )
                    page = context.new_page()
                    errors = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.on(
                        "console",
                        lambda m: errors.append(m.text) if m.type == "error" and "401" not in m.text else None,
                    )
                    steps = Steps(page)
                    try:
                        drive(server.base, page, steps, tmp)
                    except Exception:
                        page.screenshot(path=str(SHOTS / "failed.png"), full_page=True)
                        raise
                    # A CSP violation or a script error is a failure even when the steps passed.
                    assert not errors, errors
                finally:
                    browser.close()
        finally:
            server.stop()
    print("==> the console passed in chromium; screenshots in target/e2e/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
