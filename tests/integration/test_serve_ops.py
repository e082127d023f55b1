"""Operating the served app: Prometheus metrics through Ray, the demo and the CLI against
it, the web UI, a missing collection that degrades and recovers, and a canary question
that must reach no log or file of the cluster (the session's app: conftest.py)."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from pathlib import Path

import httpx
import pytest
from served_app import (
    AUTH,
    BASE,
    IMAGE,
    JSON_ANSWER,
    JSON_QUESTION,
    KEY,
    SERVE_PORT,
    in_subprocess,
    png,
    sse_events,
    xray,
)

from medray import DISCLAIMER

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ metrics


def test_prometheus_metrics_through_ray(client, ray_cluster):
    import ray

    ports = [n["MetricsExportPort"] for n in ray.nodes() if n["Alive"]]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        client.get("/v1/models")
        text = ""
        for port in ports:
            with contextlib.suppress(httpx.HTTPError):
                text += httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        if 'endpoint="/v1/models"' in text and "medray_http_request_latency_ms" in text:
            break
        time.sleep(3)
    lines = [ln for ln in text.splitlines() if "medray_http" in ln and not ln.startswith("#")]
    assert any('endpoint="/v1/models"' in ln and 'status="200"' in ln for ln in lines), lines[:5]


# ------------------------------------------------------------------ demo


def test_demo_sends_an_analyze_request_and_prints_live_urls(client, capsys):
    """What ``medray demo`` does once the app runs (``serve_demo``: ``analyze_once`` and
    ``print_urls``; the deploy/remove around them is the fixture's): every printed URL
    answers on this app."""
    from medray.cli.serve import analyze_once, print_urls
    from medray.serving.deploy import load_serve_config

    kinds = analyze_once(BASE, "Is there a pleural effusion?", AUTH)
    assert kinds[0] == "guard" and kinds[-1] == "done" and "error" not in kinds
    assert {"reasoning", "summary", "similar_cases", "knowledge", "safety"} <= set(kinds)
    print_urls(load_serve_config("serve_apps/configs/local.yaml", [], port=SERVE_PORT))
    urls = [ln.split()[-1] for ln in capsys.readouterr().out.splitlines() if "http://" in ln]
    assert f"{BASE}/v1/analyze" in urls and f"{BASE}/ui/" in urls and len(urls) == 9
    for url in urls:
        path = url.removeprefix(BASE)
        gets = ("/health", "/ready", "/v1/models", "/docs", "/ui/")
        r = client.get(path) if path in gets else None
        if r is None:
            r = client.post(path, json={})  # POST endpoints: reachable, input checked
            assert r.status_code == 422, (url, r.status_code)
        else:
            assert r.status_code == 200, (url, r.status_code)


def test_web_ui_analyzes_through_the_served_api(client, tmp_path):
    """The Gradio UI mounted on the Serve gateway (``/ui``), driven with Gradio's own
    client through Serve's proxy: its queue streams, and its analyze call reaches this
    app's ``/v1/analyze`` with the key typed into the page (a wrong key: the API's 401).
    The browser test (test_ui_browser.py) covers the page itself."""
    from gradio_client import Client, handle_file

    page = client.get("/ui/")
    assert page.status_code == 200 and "gradio" in page.text.lower()
    image = tmp_path / "chest.png"
    image.write_bytes(png(xray(3)))
    ui = Client(f"{BASE}/ui/", verbose=False)
    args = (handle_file(str(image)), "Is there a pleural effusion?", "(the app's default)")
    # Inputs: image, question, model, key, sample (none), reasoning length (None: default).
    status, _, _, _, answer, cases, safety, cites = ui.predict(
        *args, KEY, None, None, api_name="/analyze"
    )
    assert status == "**Done.**", status
    assert answer and "case-" in cases and DISCLAIMER in safety, (answer, cases, safety)
    assert "medray-cite" in cites or "No citations" in cites, cites
    status = ui.predict(*args, "wrong", None, None, api_name="/analyze")[0]
    assert status.startswith("**Error (401):**") and "invalid API key" in status


# ------------------------------------------------------------------ degraded retrieval


def test_zz_missing_collection_degrades_to_a_clear_event_and_recovers(client, milvus_uri):
    """Runs last in this module: drops the knowledge collection under the running app,
    then builds it again; the app finds it again without a restart (the UI tests after
    this module cite from it)."""
    body = {"image": IMAGE, "max_new_tokens": 4, "agent": False}

    def analyze() -> dict:
        with client.stream("POST", "/v1/analyze", json=body) as resp:
            assert resp.status_code == 200
            return {e: d for _, e, d in sse_events(resp)}

    in_subprocess(f"drop_knowledge({milvus_uri!r})")
    try:
        data = analyze()
        assert data["knowledge"]["hits"] == [] and "does not exist" in data["knowledge"]["error"]
        assert len(data["similar_cases"]["hits"]) == 3  # the rest still works
        assert "done" in data
    finally:
        in_subprocess(f"index_knowledge({milvus_uri!r})")
    data = analyze()
    assert data["knowledge"]["hits"] and not data["knowledge"].get("error"), data["knowledge"]


# ------------------------------------------------------------------ medray analyze (CLI)


def test_cli_analyze_streams_readable_lines(client, tmp_path):
    """``medray analyze FILE "question"`` against this app: the image goes from a file,
    each step is a line, ``--json`` prints the raw events, an unknown model is the API's
    own 404 message."""
    from click.testing import CliRunner

    from medray.cli.main import cli

    image = tmp_path / "chest.png"
    image.write_bytes(base64.b64decode(IMAGE.split(",", 1)[1]))
    common = ["--url", BASE, "--api-key", KEY]
    args = ["analyze", str(image), JSON_QUESTION, "--model", "lora-json", "--max-new-tokens", "120"]
    res = CliRunner().invoke(cli, [*args, *common, "--no-agent"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "guard: allowed"
    assert lines[1:5] == [
        f"caption: {JSON_ANSWER['caption']}",
        f"step 1: {JSON_ANSWER['reasoning'][0]}",
        f"step 2: {JSON_ANSWER['reasoning'][1]}",
        f"answer: {JSON_ANSWER['answer']}",
    ]
    assert lines[5].startswith("reasoning: parsed (model lora-json")
    assert f"  box: {JSON_ANSWER['boxes'][0]}" in lines
    assert any(ln.startswith("summary: ") for ln in lines)
    assert "similar cases: 3" in lines and f"disclaimer: {DISCLAIMER}" in lines
    assert lines[-1].startswith("done in ")
    res = CliRunner().invoke(cli, ["analyze", str(image), "Is the heart enlarged?", "--json",
                                   "--max-new-tokens", "8", *common])  # fmt: skip
    assert res.exit_code == 0, res.output
    kinds = [json.loads(ln)["event"] for ln in res.output.splitlines()]
    assert kinds[0] == "guard" and kinds[-1] == "done" and "agent_answer" in kinds
    res = CliRunner().invoke(cli, ["analyze", str(image), "Q?", "--model", "nope", *common])
    assert res.exit_code == 1 and "the app answered 404" in res.output and "nope" in res.output


# ------------------------------------------------------------------ audit, canary


def _files_holding(roots: list[Path], needle: bytes) -> tuple[int, list[str]]:
    """How many files lie under ``roots``, and those whose bytes contain ``needle``."""
    seen, found = 0, []
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            seen += 1
            with contextlib.suppress(OSError), path.open("rb") as f:
                if needle in f.read():
                    found.append(str(path))
    return seen, found


def test_canary_in_questions_reaches_no_log_or_file_of_the_cluster(served, client, ray_cluster):
    """A unique string sent in an image question, a chat message and a search query is in
    no file the cluster wrote (Ray's session logs of every node, MEDRAY_HOME: cluster
    logs, Milvus data, the audit log); the audit log holds the three requests."""
    import uuid

    from medray.paths import medray_home
    from medray.serving.audit import read_records
    from medray.serving.ratelimit import key_id

    canary = f"CANARY{uuid.uuid4().hex}"  # made here: not in the uploaded sources
    question = f"Is there a pleural effusion? Patient {canary}"
    with client.stream(
        "POST",
        "/v1/analyze",
        json={"image": IMAGE, "question": question, "max_new_tokens": 8},
    ) as r:
        assert r.status_code == 200, r.read()
        done = dict((e, d) for _, e, d in sse_events(r))["done"]
    chat = client.post(
        "/v1/chat/completions",
        json={
            "model": "medray-reasoner",
            "max_tokens": 8,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"Describe this chest film of {canary}"},
                        {"type": "image_url", "image_url": {"url": IMAGE}},
                    ],
                }
            ],
        },
    )
    search = client.post("/v1/search", json={"text": f"pleural effusion {canary}", "k": 2})
    assert chat.status_code == 200 and search.status_code == 200
    # Serve's proxy sends x-request-id again beside the app's (httpx joins them: "id, id").
    rids = {done["request_id"]} | {
        r.headers["x-request-id"].split(",")[0].strip() for r in (chat, search)
    }
    assert len(rids) == 3, rids

    audit_file = medray_home() / "logs" / "audit.jsonl"
    records = {r["request_id"]: r for r in read_records(audit_file)}
    assert rids <= set(records), "the audit log misses a request"
    assert {records[i]["key_id"] for i in rids} == {key_id(KEY)}
    assert {records[i]["endpoint"] for i in rids} == {
        "/v1/analyze",
        "/v1/chat/completions",
        "/v1/search",
    }
    roots = [Path(ray_cluster.temp_dir), medray_home()]
    seen, found = _files_holding(roots, canary.encode())
    # The scan reads the Serve replicas' logs: the request log line of the analyze is there.
    _, with_rid = _files_holding([Path(ray_cluster.temp_dir)], done["request_id"].encode())
    assert any("serve" in p for p in with_rid), with_rid
    assert not found, f"the canary is in {found} ({seen} files read)"
    # The key itself is in nothing the dashboard shows (the app's config names its file).
    from medray.serving.deploy import app_details

    shown = json.dumps(app_details(served, "medray"))
    assert "api_keys_file" in shown and KEY not in shown
