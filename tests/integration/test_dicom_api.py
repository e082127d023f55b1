"""DICOM through the HTTP API (issue 19): analyze, search and chat image parts take it
with no change to the gateway; the reasoner gets the same input tensor from a DICOM as
from the PNG of the same image; the patient's name never shows in a response or a log.

The app runs over the plain classes in this process (no Ray); the images are captured
where the reasoner receives them (``Reasoner.stream``), the deployment boundary."""

from __future__ import annotations

import base64
import io
import logging

import numpy as np
import pytest
from dicom_fixtures import CANARY_ID, CANARY_NAME, make_dicom
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from medray.config import from_dict
from medray.contracts import reasoner as contract
from medray.models.generate import encode, render
from medray.serving.sse import read_events
from serve_apps.settings import AppArgs

pytestmark = pytest.mark.integration

MODEL = AppArgs().models.served_name
QUESTION = "Is there an effusion?"


@pytest.fixture(scope="module")
def backend(tiny_models):
    from medray.agent import AgentSettings
    from medray.serving.embedder import Embedder
    from medray.serving.guard import Guard
    from medray.serving.medqa import MedQA
    from medray.serving.reasoner import Reasoner
    from medray.serving.summariser import Summariser
    from serve_apps.backend import LocalBackend

    agent = AgentSettings(max_cycles=0, max_queries=1, max_new_tokens=4)
    return LocalBackend(
        Guard(), Reasoner(), Summariser(), Embedder(), None, agent=agent, medqa=MedQA()
    )


@pytest.fixture(scope="module")
def client(backend):
    from serve_apps.gateway import create_app

    args = from_dict(
        AppArgs, {"generation": {"max_new_tokens": 4}, "retrieval": {"enabled": False}}
    )
    return TestClient(create_app(backend, args), base_url="http://127.0.0.1")  # loopback: no key


@pytest.fixture()
def seen_images(backend):
    """Every image the reasoner receives (calls through to the real reasoner)."""
    reasoner = backend.reasoner
    stream = type(reasoner).stream
    images: list[Image.Image] = []

    def recording_stream(messages, images_=(), params=None, adapter=None):
        images.extend(images_)
        return stream(reasoner, messages, images_, params, adapter)

    reasoner.stream = recording_stream
    yield images
    del reasoner.stream


def _gray() -> np.ndarray:
    """An 8-bit chest-like image: a dark field, a bright disc, a gradient band."""
    img = Image.new("L", (96, 80), 30)
    draw = ImageDraw.Draw(img)
    draw.ellipse([20, 15, 60, 55], fill=210)
    for x in range(96):
        draw.line([(x, 65), (x, 79)], fill=int(x * 255 / 95))
    return np.asarray(img)


def _png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray, "L").save(buf, "PNG")
    return buf.getvalue()


def _dicoms(gray: np.ndarray) -> dict[str, bytes]:
    """The same image as DICOM files whose rescale + window + photometric give it back:
    stored = 2 * value + 100, rescaled by slope 0.5 / intercept -50, window 128 / 256
    (the identity on 0..255); and the MONOCHROME1 file of the inverted values."""
    g = gray.astype(np.int32)
    tags = {"RescaleSlope": 0.5, "RescaleIntercept": -50, "WindowCenter": 128, "WindowWidth": 256}
    return {
        "MONOCHROME2": make_dicom(2 * g + 100, **tags),
        "MONOCHROME1": make_dicom(2 * (255 - g) + 100, photometric="MONOCHROME1", **tags),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _analyze(client, data: bytes, question: str = QUESTION) -> tuple[int, str, dict]:
    with client.stream(
        "POST", "/v1/analyze", json={"image": _b64(data), "question": question}
    ) as r:
        lines = list(r.iter_lines())
    text = "\n".join(lines)
    events = dict(read_events(lines)) if r.status_code == 200 else {}
    return r.status_code, text, events


def _pixel_inputs(backend, image: Image.Image) -> dict[str, np.ndarray]:
    """The reasoner's input tensors for ``image`` (its processor, the contract's prompt)."""
    processing = backend.reasoner.processor
    text = render(processing, contract.messages(QUESTION, True))
    inputs = encode(processing, [text], [image])
    return {k: v.numpy() for k, v in inputs.items() if k in ("pixel_values", "image_grid_thw")}


def test_png_and_dicom_give_the_reasoner_the_same_input_tensor(client, backend, seen_images):
    gray = _gray()
    status, _, ev = _analyze(client, _png(gray))
    assert status == 200 and "done" in ev
    for photometric, data in _dicoms(gray).items():
        status, text, ev = _analyze(client, data)
        assert status == 200 and "done" in ev, (photometric, text[:300])
    assert len(seen_images) == 3
    png_img, *dicom_imgs = seen_images
    want = _pixel_inputs(backend, png_img)
    assert want["pixel_values"].size > 0
    for img in dicom_imgs:
        assert np.array_equal(np.asarray(img), np.asarray(png_img))
        got = _pixel_inputs(backend, img)
        assert set(got) == set(want) == {"pixel_values", "image_grid_thw"}
        for key in want:
            assert np.array_equal(got[key], want[key]), key
    # The comparison can fail: a window of a different range gives another tensor.
    other = make_dicom(gray.astype(np.int32), WindowCenter=100, WindowWidth=120)
    status, _, _ = _analyze(client, other)
    assert status == 200
    changed = _pixel_inputs(backend, seen_images[-1])
    assert not np.array_equal(changed["pixel_values"], want["pixel_values"])


def _chat(client, data: bytes) -> tuple[int, str]:
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "max_tokens": 3,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": f"data:;base64,{_b64(data)}"}},
                        {"type": "text", "text": QUESTION},
                    ],
                }
            ],
        },
    )
    return r.status_code, r.text


def test_the_patient_name_never_shows_in_a_response_or_a_log(client, seen_images, caplog):
    gray = _gray()
    good = _dicoms(gray)["MONOCHROME1"]
    multi = make_dicom(np.zeros((2, 32, 32)), NumberOfFrames=2)
    compressed = make_dicom(np.zeros((32, 32)), compressed=True)
    assert CANARY_NAME.encode() in good and CANARY_NAME.encode() in multi
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        status, text, ev = _analyze(client, good)
        assert status == 200 and "summary" in ev and "safety" in ev
        texts.append(text)
        for data, code in ((multi, 422), (compressed, 415)):
            status, text, _ = _analyze(client, data)
            assert status == code, text
            texts.append(text)
        status, text = _chat(client, good)
        assert status == 200, text
        texts.append(text)
        status, text = _chat(client, multi)
        assert status == 422 and "multi-frame" in text
        texts.append(text)
        r = client.post("/v1/search", json={"image": _b64(good)})
        assert r.status_code == 200 and r.json()["mode"] == "image_to_text"
        texts.append(r.text)
        r = client.post("/v1/search", json={"image": _b64(multi)})
        assert r.status_code == 422 and r.json()["error"]["code"] == "dicom_multiframe"
        texts.append(r.text)
    assert len(seen_images) == 2  # analyze and chat reached the reasoner with the DICOM
    logs = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert logs.strip(), "the requests were logged (the canary check looks at something)"
    for canary in (CANARY_NAME, "CANARY", CANARY_ID, "19010101"):
        for text in texts:
            assert canary not in text
        assert canary not in logs
