"""The dashboard page in a real headless Chromium (Debian's package, driven by Playwright):
upload an image and see the heat map; fill a table row and see the bar chart; browse the log."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
from cli_assets import IRIS_FEATURES, assets

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                       "(make test installs it: apt-get install chromium)"),
]


def _serve(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _app(tmp_path, model, weights, token=None):
    from dlbacktrace.apps.server import ExplainService, create_app
    from dlbacktrace.apps.server.config import ServerConfig
    from dlbacktrace.audit import AuditStore
    from dlbacktrace.io.loading import load_model

    loaded = load_model(model, weights=str(weights))
    service = ExplainService(loaded, audit=AuditStore(tmp_path / "audit.db"), source="server")
    return create_app(service, ServerConfig(token=token))


def test_upload_image_shows_heat_map_and_contrast(browser, tmp_path):
    a = assets()
    app = _app(tmp_path, "dlbacktrace.examples.demo:DigitsCNN", a.digits_weights)
    server, thread, base = _serve(app)
    page = browser.new_page()
    external: list[str] = []
    page.on("request", lambda req: external.append(req.url)
            if not req.url.startswith((base, "data:", "blob:")) else None)
    try:
        page.goto(base + "/")
        page.set_input_files("#image-file", str(a.digit_pngs[0]))
        page.select_option("#form-image select[name=mode]", "contrast")
        page.click("#form-image button[type=submit]")
        heat = page.wait_for_selector("#rows img.heatmap", timeout=120_000)
        assert heat.get_attribute("src").startswith("data:image/png;base64,")
        width = page.evaluate("document.querySelector('#rows img.heatmap').naturalWidth")
        assert width > 100  # a decoded, rendered PNG
        assert page.query_selector("#rows img.contrast") is not None
        assert "audit record #1" in page.inner_text("#record")
        assert "conservation error" in page.inner_text("#ledger")
        # The audit tab lists the record.
        page.click("button.tab[data-tab=audit]")
        page.wait_for_selector("#audit-table tbody tr[data-id='1']", timeout=30_000)
        assert external == []  # the page loads nothing from the network
    finally:
        page.close()
        server.should_exit = True
        thread.join(timeout=30)


def test_table_row_form_with_token(browser, tmp_path):
    a = assets()
    token = "dashboard-token-123456"
    server, thread, base = _serve(_app(tmp_path, a.iris_spec, a.iris_weights, token=token))
    page = browser.new_page()
    try:
        page.goto(base + "/")
        page.fill("#token", token)
        page.dispatch_event("#token", "change")
        page.reload()  # the token is kept for the session; the form comes from /model
        page.click("button.tab[data-tab=table]")
        page.wait_for_selector("#table-fields input[name=f3]", timeout=30_000)
        for i, value in enumerate(a.iris_x[120].tolist()):
            page.fill(f"#table-fields input[name=f{i}]", repr(value))
        page.click("#form-table button[type=submit]")
        page.wait_for_selector("#rows table.feature-chart", timeout=60_000)
        text = page.inner_text("#rows")
        assert "virginica" in text
        assert all(name in text for name in IRIS_FEATURES)
        bars = page.query_selector_all("#rows table.feature-chart span.bar")
        assert len(bars) == 4
    finally:
        page.close()
        server.should_exit = True
        thread.join(timeout=30)
