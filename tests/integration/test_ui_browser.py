"""The web UI in a real browser: Playwright driving the distribution's Chromium
(headless, no browser download) against the gateway app with the UI mounted, served by
uvicorn in this process, with API keys required and a small LoRA adapter trained here so
the tiny VLM writes a structured answer with a box."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
from conftest import PORT_OFFSET
from PIL import Image
from test_serve_app import JSON_ANSWER, JSON_QUESTION, png, train_json_adapter, xray

from medray.config import from_dict
from medray.retrieval import MilvusSettings
from medray.serving.retriever import Retriever
from serve_apps.settings import AppArgs
from serve_apps.ui.client import ApiClient

pytestmark = pytest.mark.integration

PORT = 18741 + PORT_OFFSET
BASE = f"http://127.0.0.1:{PORT}"
KEY = "ui-test-key"
ADAPTER = "lora-json"
NON_MEDICAL = "What is the capital of France?"
TIMEOUT_MS = 90_000


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed here (apt-get, as root) when it is missing."""
    path = shutil.which("chromium")
    if path is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env)
        path = shutil.which("chromium")
    if path is None:
        pytest.fail("the browser tests need Chromium: run `apt-get install -y chromium` as root")
    return path


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    """The gateway app with the UI at /ui, on 127.0.0.1:PORT, keys required."""
    import uvicorn

    from medray.agent import AgentSettings
    from medray.serving.embedder import Embedder
    from medray.serving.guard import Guard
    from medray.serving.medqa import MedQA
    from medray.serving.reasoner import Reasoner
    from medray.serving.summariser import Summariser
    from serve_apps.backend import LocalBackend
    from serve_apps.gateway import create_app
    from serve_apps.ui import mount_ui

    adapter = train_json_adapter(tmp_path_factory.mktemp("ui-adapter") / ADAPTER)
    dead_milvus = MilvusSettings(uri="http://127.0.0.1:1", timeout_s=2)
    backend = LocalBackend(
        Guard(),
        Reasoner(adapters={ADAPTER: adapter}),
        Summariser(),
        Embedder(),
        Retriever(dead_milvus, "tiny-clip", "minilm-l6"),
        agent=AgentSettings(max_cycles=0, max_queries=1, max_new_tokens=4),
        medqa=MedQA(),
    )
    key_file = tmp_path_factory.mktemp("ui-keys") / "api_keys"
    key_file.write_text(KEY)
    args = {
        "adapters": {ADAPTER: adapter},
        "auth": {"api_keys_file": str(key_file), "require": "always"},
        "generation": {"max_new_tokens": 96, "temperature": 0.0},
    }
    app = create_app(backend, from_dict(AppArgs, args))
    mount_ui(app)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=PORT, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield BASE
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(server, browser):
    """A fresh page on /ui for each test."""
    pg = browser.new_page(viewport={"width": 1280, "height": 1600})
    pg.set_default_timeout(TIMEOUT_MS)
    try:
        pg.goto(f"{server}/ui/")
        pg.wait_for_selector("#medray-run")
        yield pg
    finally:
        pg.close()


def _upload(pg, path) -> None:
    pg.set_input_files("#medray-upload input[type=file]", str(path))
    pg.wait_for_selector(f"#medray-upload td.filename[aria-label='{path.name}']")


def _status(pg) -> str:
    return pg.inner_text("#medray-status")


def _run(pg, question: str, key: str) -> None:
    pg.fill("#medray-question textarea", question)
    pg.fill("#medray-key input", key)
    pg.click("#medray-run")


def _wait_status(pg, *words: str) -> str:
    cond = " || ".join(f"t.includes({w!r})" for w in words)
    pg.wait_for_function(
        f"() => {{ const t = document.querySelector('#medray-status').innerText; return {cond}; }}"
    )
    return _status(pg)


def test_analyze_streams_steps_and_draws_the_predicted_box(page, tmp_path):
    source = xray(0)
    upload = tmp_path / "xray.png"
    upload.write_bytes(png(source))
    page.fill("#medray-key input", KEY)
    page.get_by_role("button", name="Load models").click()
    page.click("#medray-model input")
    page.get_by_role("option", name=ADAPTER).click()
    _upload(page, upload)
    _run(page, JSON_QUESTION, KEY)
    # A reasoning step is on the page while the analysis is still running.
    page.wait_for_function(
        "() => /Caption|Step 1/.test(document.querySelector('#medray-steps').innerText)"
        " && document.querySelector('#medray-status').innerText.includes('analysing')"
    )
    page.screenshot(path=str(tmp_path / "analyze-streaming.png"), full_page=True)
    status = _wait_status(page, "Done.", "Error", "Refused")
    page.screenshot(path=str(tmp_path / "analyze-done.png"), full_page=True)
    assert status.strip() == "Done.", status
    steps = page.inner_text("#medray-steps")
    assert JSON_ANSWER["reasoning"][0] in steps and JSON_ANSWER["caption"] in steps
    safety = page.inner_text("#medray-safety")
    assert "Risk level" in safety
    assert "research" in page.inner_text("#medray-disclaimer").lower()

    src = page.get_attribute("#medray-image img", "src")
    shown = Image.open(io.BytesIO(httpx.get(httpx.URL(f"{BASE}/ui/").join(src)).content))
    shown = np.asarray(shown.convert("RGB").resize(source.size), dtype=np.int16)
    given = np.asarray(source, dtype=np.int16)
    w, h = source.size
    x1, y1, x2, y2 = JSON_ANSWER["boxes"][0]
    box = (slice(round(y1 * h), round(y2 * h) + 1), slice(round(x1 * w), round(x2 * w) + 1))
    changed = np.abs(shown - given).sum(axis=2) > 30
    assert changed[box].sum() > 20, "no box drawn inside the predicted region"
    far = (slice(round(0.8 * h), h), slice(round(0.7 * w), w))  # away from box and label
    assert changed[far].sum() == 0, "pixels changed outside the box"


def test_non_medical_question_shows_the_refusal(page, tmp_path):
    upload = tmp_path / "other.png"
    upload.write_bytes(png(xray(1)))
    # What the API itself answers, for the same request.
    events = ApiClient(BASE, KEY).analyze(upload.read_bytes(), NON_MEDICAL)
    guard = dict(events)["guard"]
    assert guard["allowed"] is False
    _upload(page, upload)
    _run(page, NON_MEDICAL, KEY)
    status = _wait_status(page, "Refused", "Error")
    page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)
    assert "Refused" in status and " ".join(guard["message"].split())[:60] in status


def test_wrong_api_key_shows_the_401_message(page, tmp_path):
    upload = tmp_path / "xray.png"
    upload.write_bytes(png(xray(0)))
    _upload(page, upload)
    _run(page, JSON_QUESTION, "not-the-key")
    status = _wait_status(page, "401")
    page.screenshot(path=str(tmp_path / "unauthorised.png"), full_page=True)
    assert "invalid API key" in status, status
