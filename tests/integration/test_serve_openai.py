"""The served app's OpenAI-compatible API through the official ``openai`` client, and LoRA
adapters loaded on demand (the session's app: conftest.py)."""

from __future__ import annotations

import pytest
from served_app import (
    ADAPTERS,
    IMAGE,
)

from medray import DISCLAIMER

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ OpenAI compatibility


def test_openai_client_lists_models(oai):
    ids = [m.id for m in oai.models.list().data]
    # The reasoner and its adapters (chat, analyze), then the text QA model (/generate).
    assert ids == ["medray-reasoner", *ADAPTERS, "lora-json", "medray-medqa"]


def test_openai_client_plain_completion(oai):
    resp = oai.chat.completions.create(
        model="medray-reasoner",
        messages=[
            {"role": "user", "content": "What does a pleural effusion look like on a chest X-ray?"}
        ],
        max_tokens=8,
    )
    assert resp.object == "chat.completion" and resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens <= 8
    assert resp.model_extra["safety_report"]["disclaimer"] == DISCLAIMER


def test_openai_client_streaming_with_an_image(oai):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Is the heart enlarged?"},
                {"type": "image_url", "image_url": {"url": IMAGE}},
            ],
        }
    ]
    stream = oai.chat.completions.create(
        model="medray-reasoner", messages=messages, max_tokens=16, stream=True
    )
    chunks = list(stream)
    assert len(chunks) >= 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].model_extra["safety_report"]["disclaimer"] == DISCLAIMER
    plain = oai.chat.completions.create(model="medray-reasoner", messages=messages, max_tokens=16)
    assert plain.choices[0].message.content == text  # greedy: same answer either way
    assert plain.usage.prompt_tokens > 16  # the image's visual tokens are in the prompt


def test_openai_client_guard_refusal(oai):
    resp = oai.chat.completions.create(
        model="medray-reasoner",
        messages=[{"role": "user", "content": "Write a poem about the sea."}],
    )
    assert resp.choices[0].finish_reason == "content_filter"
    assert "only answers medical" in resp.choices[0].message.content


def test_openai_client_unknown_model_is_a_404(oai):
    import openai

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Is there an effusion?"}]
        )


# ------------------------------------------------------------------ LoRA multiplexing


def test_adapters_load_on_demand_and_are_evicted_lru(client, oai):
    def answer(model: str) -> str:
        return (
            oai.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Is there an effusion?"}],
                max_tokens=8,
            )
            .choices[0]
            .message.content
        )

    base = answer("medray-reasoner")
    outs = {name: answer(name) for name in ADAPTERS[:2]}
    assert client.get("/v1/adapters").json()["loaded"] == sorted(ADAPTERS[:2])
    outs[ADAPTERS[2]] = answer(ADAPTERS[2])
    info = client.get("/v1/adapters").json()
    # Capacity 2: loading the third evicted the least recently used (the first).
    assert info["loaded"] == sorted(ADAPTERS[1:]) and info["max_loaded_per_replica"] == 2
    assert len({base, *outs.values()}) == 4, "each adapter changes the model's output"
    assert answer(ADAPTERS[0]) == outs[ADAPTERS[0]]  # reloaded on demand, same weights
    assert answer("medray-reasoner") == base  # the base model is untouched by adapters
