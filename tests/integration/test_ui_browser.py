"""The web UI in a real browser against the running Serve app: Playwright driving the
distribution's Chromium (headless, no browser download; apt-installed by the session
fixture when missing) on the page Serve's proxy serves at ``/ui``.

The app is the session's test app (``served_app`` in conftest.py), deployed once from
``serve_apps/configs/local.yaml`` on the shared test cluster as ``medray serve up`` does
(served_app.py's ``app_config``: keys required, small Milvus collections indexed with
the app's own embedders, a LoRA adapter trained so the tiny VLM writes a structured answer
with a box), with the UI app's ``samples_dir`` and ``runs_dir`` from ``ui_folders``. Screenshots are the suite's
artifacts: ``test-artifacts/ui-browser/`` in the repository (``$MEDRAY_TEST_ARTIFACTS``
elsewhere), kept after the run for a CI system to collect."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicom_fixtures import make_dicom
from PIL import Image
from served_app import (
    JSON_ANSWER,
    JSON_QUESTION,
    KEY,
    REPO,
    SAMPLE,
    SERVE_PORT,
    png,
    xray,
)

from serve_apps.ui.client import ApiClient

pytestmark = pytest.mark.integration

BASE = f"http://127.0.0.1:{SERVE_PORT}"
ADAPTER = "lora-json"
NON_MEDICAL = "What is the capital of France?"
TIMEOUT_MS = 120_000
# What the page shows when a UI handler raised (Gradio's toast): never expected here.
TOAST = ".toast-body.error"


@pytest.fixture
def shots() -> Path:
    """Where the screenshots go (see the module docstring)."""
    root = Path(os.environ.get("MEDRAY_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder = root / "ui-browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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
def served_ui(served_app) -> str:
    """The session's test app (API at /, UI at /ui; conftest.py): its base URL."""
    return served_app.base


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
def page(served_ui, browser):
    """A fresh page on /ui for each test, the API key typed in."""
    pg = browser.new_page(viewport={"width": 1280, "height": 1800})
    pg.set_default_timeout(TIMEOUT_MS)
    try:
        pg.goto(f"{served_ui}/ui/")
        pg.wait_for_selector("#medray-run")
        pg.fill("#medray-key input", KEY)
        yield pg
    finally:
        pg.close()


def _upload(pg, path, where: str = "#medray-upload") -> None:
    pg.set_input_files(f"{where} input[type=file]", str(path))
    pg.wait_for_selector(f"{where} td.filename[aria-label='{path.name}']")


def _pick(pg, dropdown: str, option: str) -> None:
    pg.click(f"{dropdown} input")
    pg.get_by_role("option", name=option, exact=True).click()


def _run(pg, question: str, tokens: int | None = None) -> None:
    pg.fill("#medray-question textarea", question)
    if tokens:
        pg.fill("#medray-max-tokens input", str(tokens))
    pg.click("#medray-run")


def _wait_text(pg, selector: str, pattern: str) -> str:
    """The element's text once it matches ``pattern`` (a JS regex); fails at once on an
    error toast (a UI handler raised) instead of waiting for the timeout."""
    pg.wait_for_function(
        "([sel, pat, toast]) => document.querySelector(toast) !== null"
        " || new RegExp(pat).test(document.querySelector(sel).innerText)",
        arg=[selector, pattern, TOAST],
    )
    toast = pg.query_selector(TOAST)
    assert toast is None, f"the UI raised: {toast.inner_text()}"
    return pg.inner_text(selector)


def _shown_image(pg) -> Image.Image:
    src = pg.get_attribute("#medray-image img", "src")
    return Image.open(io.BytesIO(httpx.get(httpx.URL(f"{BASE}/ui/").join(src)).content))


def test_analyze_streams_steps_draws_the_box_and_cites(page, tmp_path, shots):
    source = xray(0)
    upload = tmp_path / "xray.png"
    upload.write_bytes(png(source))
    page.get_by_role("button", name="Load models").click()
    # The list is opened once the models are in it (the click's answer is asynchronous).
    _wait_text(page, "#medray-status", f"Models loaded: .*{ADAPTER}")
    _pick(page, "#medray-model", ADAPTER)
    _upload(page, upload)
    _run(page, JSON_QUESTION, tokens=120)
    # A reasoning step is on the page while the analysis is still running.
    page.wait_for_function(
        "() => /Caption|Step 1/.test(document.querySelector('#medray-steps').innerText)"
        " && document.querySelector('#medray-status').innerText.includes('analysing')"
    )
    page.screenshot(path=str(shots / "analyze-streaming.png"), full_page=True)
    status = _wait_text(page, "#medray-status", "Done|Error|Refused")
    page.screenshot(path=str(shots / "analyze-done.png"), full_page=True)
    assert status.strip() == "Done.", status
    steps = page.inner_text("#medray-steps")
    assert JSON_ANSWER["reasoning"][0] in steps and JSON_ANSWER["caption"] in steps
    assert "Risk level" in page.inner_text("#medray-safety")
    assert "research" in page.inner_text("#medray-disclaimer").lower()

    # The box overlay: pixels change inside the predicted box, not far from it.
    shown = np.asarray(_shown_image(page).convert("RGB").resize(source.size), dtype=np.int16)
    given = np.asarray(source, dtype=np.int16)
    w, h = source.size
    x1, y1, x2, y2 = JSON_ANSWER["boxes"][0]
    box = (slice(round(y1 * h), round(y2 * h) + 1), slice(round(x1 * w), round(x2 * w) + 1))
    changed = np.abs(shown - given).sum(axis=2) > 30
    assert changed[box].sum() > 20, "no box drawn inside the predicted region"
    far = (slice(round(0.8 * h), h), slice(round(0.7 * w), w))  # away from box and label
    assert changed[far].sum() == 0, "pixels changed outside the box"

    # The similar cases' gallery has cards.
    assert page.locator("#medray-cases .medray-case").count() >= 1
    # A citation opens on its source.
    first = page.locator("#medray-cite-1")
    assert not first.locator(".medray-cite-source p").is_visible()
    first.locator("summary").click()
    assert first.get_attribute("open") is not None
    source_text = first.locator(".medray-cite-source p").inner_text()
    assert source_text.strip() and source_text != "(no text)"
    page.screenshot(path=str(shots / "analyze-citation-open.png"), full_page=True)


def test_dicom_upload_is_analyzed(page, tmp_path, shots):
    """MONOCHROME1 with window tags: inverted and windowed by the API, analyzed."""
    gray = np.asarray(xray(1).convert("L"), dtype=np.uint16)
    pixels = 4000 - gray * 10  # MONOCHROME1: high values are dark
    upload = tmp_path / "chest.dcm"
    upload.write_bytes(
        make_dicom(pixels, photometric="MONOCHROME1", WindowCenter=2700, WindowWidth=2600)
    )
    _upload(page, upload)
    _run(page, "Is there a pleural effusion?")
    status = _wait_text(page, "#medray-status", "Done|Error|Refused")
    page.screenshot(path=str(shots / "dicom-done.png"), full_page=True)
    assert status.strip() == "Done.", status
    assert "Risk level" in page.inner_text("#medray-safety")
    shown = np.asarray(_shown_image(page).convert("L"), dtype=np.float32)
    # Inverted back: the lungs (bright in the source) are bright on the page too.
    assert shown[50, 36] > shown[5, 5] + 40, (shown[50, 36], shown[5, 5])


def test_non_medical_question_shows_the_refusal(page, shots):
    """On a sample picked from the configured folder; the message is the API's own."""
    events = ApiClient(BASE, KEY).analyze(png(xray(2)), NON_MEDICAL)
    guard = dict(events)["guard"]
    assert guard["allowed"] is False
    _pick(page, "#medray-sample", SAMPLE)
    page.wait_for_selector("#medray-image img")
    _run(page, NON_MEDICAL)
    status = _wait_text(page, "#medray-status", "Refused|Error")
    page.screenshot(path=str(shots / "refused.png"), full_page=True)
    assert status.startswith("Refused:"), status
    assert " ".join(guard["message"].split())[:60] in status


def test_wrong_api_key_shows_the_401_message(page, tmp_path, shots):
    upload = tmp_path / "xray.png"
    upload.write_bytes(png(xray(0)))
    _upload(page, upload)
    page.fill("#medray-key input", "not-the-key")
    _run(page, JSON_QUESTION)
    status = _wait_text(page, "#medray-status", "Error|Done|Refused")
    page.screenshot(path=str(shots / "unauthorised.png"), full_page=True)
    assert status.startswith("Error (401):") and "invalid API key" in status, status


def test_search_tab_text_to_images_and_image_to_reports(page, tmp_path, shots):
    page.get_by_role("tab", name="Search").click()
    page.fill("#medray-search-text textarea", "pleural effusion")
    page.click("#medray-search-by-text")
    status = _wait_text(page, "#medray-search-status", r"\d+ images|Error|Refused|unavailable")
    k = 5  # the form's default number of results; the index holds 8 cases
    assert status.startswith(f"{k} images for the text"), status
    assert page.locator("#medray-search-hits .medray-case").count() == k
    upload = tmp_path / "xray.png"
    upload.write_bytes(png(xray(0)))
    _upload(page, upload, "#medray-search-image")
    page.fill("#medray-f-labels textarea", "cardiomegaly")
    page.click("#medray-search-by-image")
    status = _wait_text(page, "#medray-search-status", r"\d+ reports|Error|Refused|unavailable")
    page.screenshot(path=str(shots / "search.png"), full_page=True)
    cards = page.locator("#medray-search-hits .medray-case")
    assert status.startswith("2 reports for the image"), status  # 2 of the 8 cases
    assert all("cardiomegaly" in c.inner_text() for c in cards.all())


def test_reports_tab_opens_two_runs_side_by_side(page, shots):
    page.get_by_role("tab", name="Reports").click()
    page.click("#medray-reports-list")
    status = _wait_text(page, "#medray-reports-status", "evaluation reports|Error")
    assert status.startswith("2 evaluation reports"), status
    page.click("#medray-reports-open")  # A: the newest run (run-b), B: the one before it
    table_b = _wait_text(page, "#medray-report-b", "metric")
    page.screenshot(path=str(shots / "reports.png"), full_page=True)
    table_a = page.inner_text("#medray-report-a")
    assert table_a.startswith("run-b") and "sft" in table_a, table_a
    assert table_b.startswith("run-a/evaluate") and "sft" not in table_b, table_b
    assert "run-b" in page.inner_text("#medray-compare")
    for plots in ("#medray-plots-a", "#medray-plots-b"):  # the reports' figures
        assert page.locator(f"{plots} img").count() >= 1, plots
    assert not page.inner_text("#medray-reports-status").strip()
