"""The web UI's Search tab: ``POST /v1/search`` with the user's key.

Text -> images finds the cases whose image matches a description; image -> reports the
cases whose report matches an uploaded image (PNG, JPEG or DICOM). The filters are the
API's own (modality, organ, labels, split), sent as typed: the API resolves case and
spelling against the values the index holds. The case index stores reports and labels,
not pixels, so each hit shows as a card (id, score, labels, modality/organ/split, report).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from .client import ApiClient, ApiError
from .render import cases_html

log = logging.getLogger(__name__)

SPLITS = ["", "train", "validation", "test"]


def filters_from(modality: str, organ: str, labels: str, split: str) -> dict[str, Any]:
    """The API's ``filters`` from the form: empty fields left out, labels comma-separated."""
    out: dict[str, Any] = {}
    for key, value in (("modality", modality), ("organ", organ), ("split", split)):
        if (value or "").strip():
            out[key] = value.strip()
    names = [x.strip() for x in (labels or "").split(",") if x.strip()]
    if names:
        out["labels"] = names
    return out


def results(body: dict[str, Any]) -> tuple[str, str]:
    """``(status, gallery html)`` for a ``/v1/search`` answer."""
    hits = body.get("hits") or []
    what = "images for the text" if body.get("mode") == "text_to_image" else "reports for the image"
    if body.get("message"):  # the guard refused the text
        return f"**Refused:** {body['message']}", cases_html({"hits": []})
    if not body.get("available", True):
        return f"**Search unavailable:** {body.get('error', '')}", cases_html(body)
    return f"**{len(hits)} {what}.**", cases_html(body)


def build_search_tab(api_key: gr.Textbox, base_url) -> None:
    """The tab's components and events, inside an open ``gr.Blocks``; ``base_url(request)``
    is the API's address for a request."""

    def run(mode, text, path, modality, organ, labels, split, k, key, request: gr.Request):
        client = ApiClient(base_url(request), key)
        flt = filters_from(modality, organ, labels, split)
        try:
            if mode == "text":
                if not (text or "").strip():
                    return "**Error:** type a description to search images for", ""
                body = client.search(text=text, k=int(k), filters=flt)
            else:
                if not path:
                    return "**Error:** upload an image (PNG, JPEG or DICOM) to search reports", ""
                body = client.search(image=Path(path).read_bytes(), k=int(k), filters=flt)
        except ApiError as e:
            return f"**Error ({e.status}):** {e}", ""
        except Exception as e:  # the API unreachable: the kind, never a trace
            log.warning("ui search: %s", type(e).__name__)
            return f"**Error:** the API did not answer ({type(e).__name__})", ""
        return results(body)

    with gr.Tab("Search"):
        with gr.Row():
            with gr.Column(scale=1):
                text = gr.Textbox(label="Describe the image", elem_id="medray-search-text")
                by_text = gr.Button("Text → images", elem_id="medray-search-by-text")
                image = gr.File(
                    label="Image (PNG, JPEG or DICOM)",
                    file_types=[".png", ".jpg", ".jpeg", ".dcm", ".dicom"],
                    type="filepath",
                    elem_id="medray-search-image",
                )
                by_image = gr.Button("Image → reports", elem_id="medray-search-by-image")
            with gr.Column(scale=1):
                modality = gr.Textbox(label="Modality (e.g. X-Ray)", elem_id="medray-f-modality")
                organ = gr.Textbox(label="Organ (e.g. chest)", elem_id="medray-f-organ")
                labels = gr.Textbox(label="Labels (comma-separated)", elem_id="medray-f-labels")
                split = gr.Dropdown(SPLITS, value="", label="Split", elem_id="medray-f-split")
                k = gr.Slider(1, 20, value=5, step=1, label="Results", elem_id="medray-f-k")
        status = gr.Markdown(elem_id="medray-search-status")
        hits = gr.HTML(elem_id="medray-search-hits")
        form = [text, image, modality, organ, labels, split, k, api_key]

        def search_text(text, path, modality, organ, labels, split, k, key, request: gr.Request):
            return run("text", text, path, modality, organ, labels, split, k, key, request)

        def search_image(text, path, modality, organ, labels, split, k, key, request: gr.Request):
            return run("image", text, path, modality, organ, labels, split, k, key, request)

        by_text.click(search_text, form, [status, hits], api_name="search_text")
        by_image.click(search_image, form, [status, hits], api_name="search_image")
