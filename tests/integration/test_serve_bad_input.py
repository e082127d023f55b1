"""Bad input to the served app: every kind gets a 4xx JSON error that names the problem,
an oversize body a 413, and the app keeps serving (the session's app: conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from served_app import (
    IMAGE,
    b64,
    png,
)

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ bad input


def _truncated_png() -> str:
    data = png(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8))
    )
    return b64(data[: len(data) // 2])


def _huge_png() -> str:
    return b64(png(Image.new("1", (10_000, 10_000))))


BAD = [
    # (name, method, path, json or raw body, headers, status, phrase)
    ("not an image", "/v1/analyze", {"image": b64(b"hello, I am text")}, 422, "not an image"),
    ("truncated image", "/v1/analyze", {"image": _truncated_png()}, 422, "truncated"),
    ("10000x10000 image", "/v1/analyze", {"image": _huge_png()}, 413, "10000x10000"),
    ("not base64", "/v1/analyze", {"image": "%%%"}, 422, "not valid base64"),
    ("remote url", "/v1/analyze", {"image": "https://example.com/x.png"}, 422, "not fetched"),
    (
        "missing image",
        "/v1/analyze",
        {"question": "Is there an effusion?"},
        422,
        "image is required",
    ),
    ("missing question", "/generate", {"temperature": 0.5}, 422, "question is required"),
    (
        "wrong type question",
        "/generate",
        {"question": 42},
        422,
        "question should be a valid string",
    ),
    (
        "wrong type temperature",
        "/generate",
        {"question": "Is there an effusion?", "temperature": "hot"},
        422,
        "temperature",
    ),
    (
        "temperature out of range",
        "/generate",
        {"question": "Is there an effusion?", "temperature": 9},
        422,
        "less than or equal to 2",
    ),
    (
        "unknown field",
        "/generate",
        {"question": "Is there an effusion?", "temprature": 1},
        422,
        "temprature is not a known field",
    ),
    ("empty question", "/generate", {"question": "   "}, 422, "question is empty"),
    (
        "max_length over limit",
        "/generate",
        {"question": "Is there an effusion?", "max_length": 100000},
        422,
        "over the limit",
    ),
    (
        "too long question",
        "/generate",
        {"question": "effusion " * 1000},
        422,
        "over the limit of 4000",
    ),
    ("invalid json", "/generate", b"{not json", 422, "not valid JSON"),
    ("json array body", "/generate", [1, 2], 422, "must be a JSON object"),
    ("unknown model", "/v1/analyze", {"image": IMAGE, "model": "nope"}, 404, "does not exist"),
    (
        "unknown adapter (chat)",
        "/v1/chat/completions",
        {"model": "lora-z", "messages": [{"role": "user", "content": "Is there an effusion?"}]},
        404,
        "lora-z",
    ),
    (
        "chat without messages",
        "/v1/chat/completions",
        {"model": "medray-reasoner", "messages": []},
        422,
        "messages",
    ),
    (
        "chat bad role",
        "/v1/chat/completions",
        {"model": "medray-reasoner", "messages": [{"role": "wizard", "content": "x"}]},
        422,
        "role",
    ),
    (
        "chat bad image part",
        "/v1/chat/completions",
        {
            "model": "medray-reasoner",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ],
                }
            ],
        },
        422,
        "not an image",
    ),
    (
        "chat empty user message",
        "/v1/chat/completions",
        {"model": "medray-reasoner", "messages": [{"role": "user", "content": ""}]},
        422,
        "empty",
    ),
    (
        "search both text and image",
        "/v1/search",
        {"text": "effusion", "image": IMAGE},
        422,
        "exactly one",
    ),
    ("search neither", "/v1/search", {"k": 3}, 422, "exactly one"),
    (
        "search bad filter",
        "/v1/search",
        {"text": "effusion", "filters": {"colour": "red"}},
        422,
        "cannot filter on 'colour'",
    ),
    (
        "search k zero",
        "/v1/search",
        {"text": "effusion", "k": 0},
        422,
        "k should be greater than or equal to 1",
    ),
    ("unknown path", "/v1/nothing", {}, 404, "Not Found"),
]


@pytest.mark.parametrize("name,path,body,status,phrase", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_json_error_naming_the_problem(
    client, name, path, body, status, phrase
):
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert phrase in err["message"], err


def test_oversize_body_is_refused_with_413(client):
    big = "A" * (9 * 1024 * 1024)
    r = client.post("/v1/analyze", json={"image": big})
    assert r.status_code == 413
    assert "exceeds the limit" in r.json()["error"]["message"]
    # Without a Content-Length (chunked upload) the limit holds too.
    r = client.post(
        "/v1/analyze",
        content=iter([b'{"image": "'] + [b"A" * (1024 * 1024)] * 9 + [b'"}']),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text


def test_the_app_survives_bad_input(client):
    """After the whole bad-input table the app still answers."""
    assert (
        client.post(
            "/generate", json={"question": "Is there an effusion?", "max_length": 2}
        ).status_code
        == 200
    )
