"""``medray analyze``: image checks, SSE reading, readable lines, errors.

The end-to-end run against the real Serve app is in
``tests/integration/test_serve_ops.py::test_cli_analyze_streams_readable_lines``. Here a
small ``http.server`` in a thread stands in for the app only where a unit test cannot
reach it (answers of a given status and body, byte for byte like the gateway's).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest
from click.testing import CliRunner
from PIL import Image

from medray.cli.analyze import error_message, event_lines, read_image
from medray.cli.main import cli
from medray.serving.sse import format_event, read_events

pytestmark = pytest.mark.unit


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "chest.png"
    Image.new("RGB", (16, 16), 40).save(path)
    return path


def test_read_image_accepts_png_and_jpeg(tmp_path, png):
    assert read_image(png)[1] == "image/png"
    jpg = tmp_path / "chest.jpg"
    Image.new("RGB", (16, 16), 40).save(jpg, "JPEG")
    assert read_image(jpg)[1] == "image/jpeg"


def test_read_image_accepts_dicom(tmp_path):
    import numpy as np
    from dicom_fixtures import make_dicom

    dcm = tmp_path / "chest.dcm"
    dcm.write_bytes(make_dicom(np.zeros((16, 16)), WindowCenter=0, WindowWidth=10))
    data, mime = read_image(dcm)
    assert mime == "application/dicom" and data == dcm.read_bytes()


@pytest.mark.parametrize(
    "content,message",
    [(None, "no such file"), (b"", "an empty file"), (b"hello world", "not a PNG, JPEG or DICOM")],
)
def test_read_image_names_the_problem(tmp_path, content, message):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(Exception, match=message):
        read_image(path)


def test_read_events_parses_events_with_and_without_a_final_blank_line():
    text = 'event: guard\ndata: {"allowed": true}\n\nevent: done\ndata: {"x": 1}'
    assert list(read_events(text.split("\n"))) == [("guard", {"allowed": True}), ("done", {"x": 1})]


def test_read_events_reads_what_the_gateway_writes():
    events = [("step", {"kind": "caption", "text": "Rö\nntgen"}), ("done", {"n": [1, 2]})]
    wire = "".join(format_event(e, d) for e, d in events)
    assert list(read_events(wire.split("\n"))) == events


def test_event_lines_are_readable():
    assert event_lines("step", {"kind": "caption", "text": "Chest X-ray."}) == [
        "caption: Chest X-ray."
    ]
    assert event_lines("step", {"kind": "step", "index": 1, "text": "Heart normal."}) == [
        "step 2: Heart normal."
    ]
    assert event_lines("step", {"kind": "answer", "text": "no"}) == ["answer: no"]
    assert event_lines("token", {"text": "x"}) == []
    bad = event_lines(
        "reasoning",
        {"ok": False, "errors": ["no JSON object"], "text": "a  b\nc", "model": {"model": "m"}},
    )
    assert bad == ["reasoning: NOT parsed (model m)", "  parse error: no JSON object",
                   "  raw output: a b c"]  # fmt: skip
    good = event_lines(
        "reasoning",
        {
            "ok": True,
            "parsed": {"boxes": [[0.1, 0.2, 0.3, 0.4]]},
            "model": {"model": "sft", "kind": "adapter"},
        },
    )
    assert good == ["reasoning: parsed (model sft (kind adapter))", "  box: [0.1, 0.2, 0.3, 0.4]"]
    answer = event_lines(
        "agent_answer",
        {
            "most_likely_diagnosis": None,
            "confidence": 0.2,
            "findings": [],
            "next_steps": ["Compare with prior images."],
            "citations": [{"label": "K1", "title": "Pleural effusion", "id": "k-1"}],
            "missing": "the reasoner's output did not parse",
        },
    )
    assert answer[0] == "agent answer: no diagnosis (confidence 0.2, severity -)"
    assert (
        "  [K1] Pleural effusion" in answer and "  next step: Compare with prior images." in answer
    )
    safety = event_lines("safety", {"risk_level": 0, "warnings": [], "disclaimer": "Research use."})
    assert safety == ["safety: risk level 0", "disclaimer: Research use."]
    assert event_lines("similar_cases", {"hits": [], "error": "collection missing"}) == [
        "similar cases: unavailable: collection missing"
    ]


def test_error_message_prints_the_apis_message():
    body = json.dumps({"error": {"message": "image: not an image", "type": "invalid_request"}})
    assert error_message(422, body.encode()) == "the app answered 422: image: not an image"
    assert error_message(502, b"Bad Gateway") == "the app answered 502: Bad Gateway"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_missing_file_is_a_usage_error(tmp_path):
    res = CliRunner().invoke(cli, ["analyze", str(tmp_path / "none.png"), "Is it?"])
    assert res.exit_code == 2 and "no such file" in res.output


def test_cli_unreachable_app_says_to_start_it(png):
    url = f"http://127.0.0.1:{_free_port()}"
    res = CliRunner().invoke(cli, ["analyze", str(png), "Is it?", "--url", url])
    assert res.exit_code == 1
    assert f"cannot reach the MedRay app at {url}" in res.output
    assert "medray serve up" in res.output


class _App(http.server.BaseHTTPRequestHandler):
    status, body, ctype, seen = 200, b"", "text/event-stream", []

    def do_POST(self):
        n = int(self.headers["content-length"])
        type(self).seen.append((self.path, dict(self.headers), json.loads(self.rfile.read(n))))
        self.send_response(self.status)
        self.send_header("content-type", self.ctype)
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def app():
    server = http.server.HTTPServer(("127.0.0.1", 0), _App)
    _App.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield _App, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_cli_4xx_prints_the_apis_message(app, png):
    handler, url = app
    handler.status, handler.ctype = 404, "application/json"
    handler.body = json.dumps({"error": {"message": "unknown model 'nope'"}}).encode()
    res = CliRunner().invoke(cli, ["analyze", str(png), "Q?", "--model", "nope", "--url", url])
    assert res.exit_code == 1 and "the app answered 404: unknown model 'nope'" in res.output


def test_cli_sends_the_file_and_prints_lines_or_raw_json(app, png, monkeypatch):
    handler, url = app
    handler.status, handler.ctype = 200, "text/event-stream"
    events = [("guard", {"allowed": True}), ("step", {"kind": "answer", "text": "yes"}),
              ("error", {"message": "the agent failed"}), ("done", {"inference_time_ms": 1500})]  # fmt: skip
    handler.body = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()
    monkeypatch.setenv("MEDRAY_URL", url)
    monkeypatch.setenv("MEDRAY_API_KEY", "k1")
    res = CliRunner().invoke(cli, ["analyze", str(png), "Is there an effusion?", "-k", "2"])
    assert res.output.splitlines() == [
        "guard: allowed",
        "answer: yes",
        "error: the agent failed",
        "done in 1.5 s",
    ]
    assert res.exit_code == 1  # an error event came back
    path, headers, body = handler.seen[-1]
    assert path == "/v1/analyze" and headers["Authorization"] == "Bearer k1"
    assert body["image"].startswith("data:image/png;base64,") and body["k"] == 2
    assert body["question"] == "Is there an effusion?" and body["agent"] is True
    res = CliRunner().invoke(cli, ["analyze", "--json", str(png)])
    assert [json.loads(ln) for ln in res.output.splitlines()] == [
        {"event": e, "data": d} for e, d in events
    ]
