"""The MedRay web UI (Gradio): served at ``/ui`` by a Serve application of its own
(:mod:`.deployment`), or mounted on any FastAPI app with :func:`mount_ui`.

Every request the UI makes goes to the gateway's HTTP API (:mod:`.client`) with the
API key typed into the page, so the UI is behind the same access rules, limits and
safety checks as any other client. By default the API is reached at the address of the
socket the page's request came in on (the server's own address, never a header the
browser controls); ``api_url`` overrides it (e.g. behind a proxy with a path prefix).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from medray import DISCLAIMER
from medray.serving.images import ImageError, open_image

from .client import ApiClient, ApiError
from .render import (
    CSS,
    answer_markdown,
    box_labels,
    cases_html,
    citations_html,
    draw_boxes,
    safety_markdown,
    steps_markdown,
    valid_boxes,
)
from .reports_tab import build_reports_tab
from .search_tab import build_search_tab

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a server

import gradio as gr  # after the analytics switch

log = logging.getLogger(__name__)

UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
PREVIEW_MAX_PIXELS = 40_000_000  # the API applies its own limit; this only bounds the preview
DEFAULT_MODEL = "(the app's default)"  # no model sent: the config's default_adapter or base


def _api_url(request: gr.Request | None, fixed: str | None) -> str:
    if fixed:
        return fixed
    raw = getattr(request, "request", None)
    scope = getattr(raw, "scope", None) or {}
    server = scope.get("server")
    if not server:
        raise ApiError(500, "the UI cannot tell the API's address: mount it with api_url=...")
    host, port = server
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def _preview(data: bytes) -> Image.Image | None:
    """The image as the API decodes it (PNG, JPEG or DICOM), or None if it does not."""
    try:
        return open_image(data, PREVIEW_MAX_PIXELS)
    except ImageError:
        return None  # the API's own answer explains why


def sample_images(folder: Path | None) -> list[str]:
    """The image files (PNG, JPEG, DICOM) directly in ``folder``, by name."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in UPLOAD_TYPES
    )


def build_blocks(
    api_url: str | None = None,
    samples_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
) -> gr.Blocks:
    """The UI: Analyze (streaming ``/v1/analyze``), Search (``/v1/search``) and Reports
    (evaluation runs under ``runs_dir``, default ``$MEDRAY_HOME/runs``); the disclaimer
    and the API key on top.

    ``samples_dir``: a folder of sample images (e.g. of the indexed cases) the Analyze tab
    offers besides an upload. The case index holds reports and labels, not pixels, so the
    images a person can pick come from this folder; none set: upload only.
    """
    from medray.paths import runs_dir as default_runs_dir

    samples = Path(samples_dir) if samples_dir else None
    runs_root = Path(runs_dir) if runs_dir else default_runs_dir()

    def base_url(request: gr.Request | None) -> str:
        return _api_url(request, api_url)

    def pick_sample(name: str | None):
        if not name or samples is None or name not in sample_images(samples):
            return gr.update(), None
        return None, _preview((samples / name).read_bytes())

    def load_models(api_key: str, request: gr.Request):
        try:
            names = ApiClient(_api_url(request, api_url), api_key).models()
        except ApiError as e:
            return gr.update(), f"**Error:** {e}"
        except Exception as e:  # the API itself unreachable: say so, no trace
            return gr.update(), f"**Error:** the API did not answer ({type(e).__name__})"
        # Said in the status line: the button's feedback, and what a test waits for
        # before it opens the list (choices that arrive while it is open are not shown).
        listed = ", ".join(names) or "none besides the default"
        return gr.update(choices=[DEFAULT_MODEL, *names], value=DEFAULT_MODEL), (
            f"Models loaded: {listed}."
        )

    def load_models_quietly(api_key: str, request: gr.Request):
        return load_models(api_key, request)[0]

    def analyze(
        path, question, model, api_key, sample, max_new_tokens, request: gr.Request
    ) -> Iterator[tuple]:
        state: dict[str, Any] = {
            "status": "",
            "image": None,
            "steps": "",
            "summary": "",
            "answer": "",
            "cases": "",
            "safety": "",
            "citations": "",
        }
        passages: dict[str, str] = {}
        shown_cases: list[str] = []

        def out():
            return tuple(state[k] for k in state)

        if not path and samples is not None and sample in sample_images(samples):
            path = samples / sample
        if not path:
            state["status"] = "**Error:** upload an image (PNG, JPEG or DICOM) or pick a sample"
            yield out()
            return
        data = Path(path).read_bytes()
        image = _preview(data)
        state["image"] = image
        state["status"] = "*analysing…*"
        yield out()
        client = ApiClient(_api_url(request, api_url), api_key)
        steps: list[dict[str, Any]] = []
        chosen = None if model in (None, "", DEFAULT_MODEL) else model
        try:
            extra = {"max_new_tokens": int(max_new_tokens)} if max_new_tokens else {}
            for event, body in client.analyze(data, question or "", chosen, **extra):
                if event == "guard" and not body.get("allowed", True):
                    state["status"] = f"**Refused:** {body.get('message', '')}"
                elif event == "step":
                    steps.append(body)
                    state["steps"] = steps_markdown(steps, done=False)
                elif event == "reasoning":
                    state["steps"] = steps_markdown(steps, done=True)
                    boxes = valid_boxes((body.get("parsed") or {}).get("boxes"))
                    if image is not None and boxes:
                        labels = box_labels(body.get("parsed"), len(boxes))
                        state["image"] = draw_boxes(image, boxes, labels)
                elif event == "summary":
                    state["summary"] = body.get("text", "")
                elif event == "similar_cases":
                    state["cases"] = cases_html(body)
                    shown_cases[:] = [str(h.get("id")) for h in body.get("hits") or []]
                elif event == "knowledge":
                    for h in body.get("hits") or []:
                        passages[str(h.get("id"))] = str(h.get("text") or "")
                    continue
                elif event == "agent_answer":
                    state["answer"] = answer_markdown(body)
                    cites = body.get("citations") or []
                    state["citations"] = citations_html(cites, passages, shown_cases)
                elif event == "safety":
                    state["safety"] = safety_markdown(body)
                elif event == "error":
                    state["status"] = f"**Error:** {body.get('message', '')}"
                elif event == "done":
                    if state["status"] == "*analysing…*":
                        state["status"] = "**Done.**"
                else:
                    continue
                yield out()
        except ApiError as e:
            state["status"] = f"**Error ({e.status}):** {e}"
            yield out()
        except Exception as e:  # connection lost etc.: the kind, never a trace
            log.warning("ui analyze: %s", type(e).__name__)
            state["status"] = f"**Error:** the API stream failed ({type(e).__name__})"
            yield out()

    # Uploaded images are kept in Gradio's cache only briefly (checked every 5 minutes).
    with gr.Blocks(title="MedRay", analytics_enabled=False, delete_cache=(300, 600)) as ui:
        gr.Markdown(f"# MedRay\n**{DISCLAIMER}**", elem_id="medray-disclaimer")
        api_key = gr.Textbox(
            label="API key (sent as 'Authorization: Bearer <key>' by every tab)",
            type="password",
            elem_id="medray-key",
        )
        with gr.Tab("Analyze"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(
                        label="Image (PNG, JPEG or DICOM)",
                        file_types=UPLOAD_TYPES,
                        type="filepath",
                        elem_id="medray-upload",
                    )
                    names = sample_images(samples)
                    sample = gr.Dropdown(
                        names,
                        value=None,
                        label=f"…or a sample image ({len(names)} in the sample folder)",
                        visible=bool(names),
                        elem_id="medray-sample",
                    )
                    question = gr.Textbox(label="Question", elem_id="medray-question")
                    with gr.Row():
                        model = gr.Dropdown(
                            [DEFAULT_MODEL],
                            value=DEFAULT_MODEL,
                            label="Model",
                            elem_id="medray-model",
                        )
                        refresh = gr.Button("Load models", size="sm")
                    # No ``minimum``: Gradio sends an empty field as 0 and would refuse it
                    # before the handler runs (an "Error" toast); 0 or empty = the default,
                    # anything else goes to the API, which checks it (its own message).
                    max_tokens = gr.Number(
                        None,
                        label="Reasoning length in tokens (0 or empty: the server's default)",
                        precision=0,
                        elem_id="medray-max-tokens",
                    )
                    run = gr.Button("Analyze", variant="primary", elem_id="medray-run")
                    status = gr.Markdown(elem_id="medray-status")
                with gr.Column(scale=1):
                    image = gr.Image(
                        label="Image with predicted boxes",
                        type="pil",
                        format="png",
                        interactive=False,
                        elem_id="medray-image",
                    )
                    gr.Markdown("### Reasoning")
                    steps = gr.Markdown(elem_id="medray-steps")
            gr.Markdown("### Summary")
            summary = gr.Markdown(elem_id="medray-summary")
            gr.Markdown("### Answer")
            answer = gr.Markdown(elem_id="medray-answer")
            citations = gr.HTML(elem_id="medray-citations")
            gr.Markdown("### Similar cases")
            cases = gr.HTML(elem_id="medray-cases")
            gr.Markdown("### Safety")
            safety = gr.Markdown(elem_id="medray-safety")
        build_search_tab(api_key, base_url)
        build_reports_tab(api_key, base_url, runs_root)
        outputs = [status, image, steps, summary, answer, cases, safety, citations]
        inputs = [upload, question, model, api_key, sample, max_tokens]
        run.click(analyze, inputs, outputs, api_name="analyze")
        sample.change(pick_sample, [sample], [upload, image])
        refresh.click(load_models, [api_key], [model, status])
        # On page load, without a key yet where keys are required: the button reports errors.
        ui.load(load_models_quietly, [api_key], [model])
    return ui


def mount_ui(
    app,
    *,
    path: str = "/ui",
    api_url: str | None = None,
    samples_dir: str | Path | None = None,
    runs_dir: str | Path | None = None,
) -> None:
    """Mount the web UI on a FastAPI ``app`` at ``path``.

    Args:
        app: the UI deployment's own app, or (in one process) the gateway's app.
        path: where the UI lives.
        api_url: the API's base URL as this server can reach it; default: the address of
            the socket each UI request arrived on.
        samples_dir: sample images the Analyze tab offers (see :func:`build_blocks`).
        runs_dir: where the Reports tab finds evaluation runs; default the runs directory.
    """
    gr.mount_gradio_app(
        app,
        build_blocks(api_url, samples_dir, runs_dir),
        path=path,
        ssr_mode=False,
        mcp_server=False,
        css=CSS,
        footer_links=[],
    )
