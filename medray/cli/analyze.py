"""``medray analyze IMAGE "question"``: one ``POST /v1/analyze`` to the Serve app, its
Server-Sent Events printed as readable lines while they arrive (``--json``: raw events).

The formatting (``event_lines``) and the checks of the image file (``read_image``) are plain functions, tested without an app.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from medray.data.dicom import is_dicom
from medray.serving.sse import read_events

DEFAULT_URL = "http://127.0.0.1:8000"
IMAGE_KINDS = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


def read_image(path: Path) -> tuple[bytes, str]:
    """The file's bytes and MIME type; a missing file or one that is not PNG, JPEG or
    DICOM is an error that names it (the app checks and converts the image itself)."""
    if not path.exists():
        raise click.BadParameter(f"{path}: no such file", param_hint="IMAGE")
    if not path.is_file():
        raise click.BadParameter(f"{path}: not a file", param_hint="IMAGE")
    data = path.read_bytes()
    for magic, mime in IMAGE_KINDS.items():
        if data.startswith(magic):
            return data, mime
    if is_dicom(data):
        return data, "application/dicom"
    what = "an empty file" if not data else f"starts with {data[:8]!r}"
    raise click.BadParameter(f"{path}: not a PNG, JPEG or DICOM image ({what})", param_hint="IMAGE")


def _model(info: Any) -> str:
    if isinstance(info, dict):
        extra = ", ".join(f"{k} {v}" for k, v in info.items() if k != "model" and v)
        return f"{info.get('model', '?')}" + (f" ({extra})" if extra else "")
    return str(info) if info else "?"


def _hits(title: str, data: dict) -> list[str]:
    if data.get("error"):
        return [f"{title}: unavailable: {data['error']}"]
    out = [f"{title}: {len(data.get('hits') or [])}"]
    for h in data.get("hits") or []:
        name = h.get("title") or h.get("id")
        labels = f" [{', '.join(h['labels'])}]" if h.get("labels") else ""
        out.append(f"  {h.get('score', 0):.3f}  {name}{labels}")
    return out


def _agent_answer(d: dict) -> list[str]:
    out = [
        f"agent answer: {d.get('most_likely_diagnosis') or 'no diagnosis'} "
        f"(confidence {d.get('confidence')}, severity {d.get('severity') or '-'})"
    ]
    out += [f"  finding: {f}" for f in d.get("findings") or []]
    if d.get("differential"):
        out.append(f"  differential: {', '.join(map(str, d['differential']))}")
    out += [f"  next step: {s}" for s in d.get("next_steps") or []]
    for c in d.get("citations") or []:
        out.append(f"  [{c.get('label')}] {c.get('title') or c.get('id')}")
    if d.get("missing"):
        out.append(f"  missing: {d['missing']}")
    return out


def event_lines(event: str, data: Any) -> list[str]:
    """The readable lines for one event (none for raw tokens and agent-internal steps)."""
    if event == "guard":
        if not data.get("allowed"):
            return [f"guard: refused: {data.get('message', '')}"]
        notes = [*data.get("warnings", []), *data.get("notices", [])]
        return ["guard: allowed", *(f"  note: {n}" for n in notes)]
    if event == "step":
        kind, text = data.get("kind"), data.get("text", "")
        if kind == "step":
            return [f"step {int(data.get('index', 0)) + 1}: {text}"]
        return [f"{kind}: {text}"]
    if event == "reasoning":
        parsed = data.get("parsed") or {}
        head = f"reasoning: {'parsed' if data.get('ok') else 'NOT parsed'} (model {_model(data.get('model'))})"
        out = [head]
        if not data.get("ok"):
            out += [f"  parse error: {e}" for e in data.get("errors", [])[:3]]
            text = " ".join(str(data.get("text", "")).split())
            out.append(f"  raw output: {text[:200]}{'...' if len(text) > 200 else ''}")
        for box in parsed.get("boxes") or []:
            out.append(f"  box: {box}")
        return out
    if event == "summary":
        return [f"summary: {data.get('text', '')} (model {_model(data.get('model'))})"]
    if event == "similar_cases":
        return _hits("similar cases", data)
    if event == "knowledge":
        return _hits("knowledge", data)
    if event == "agent_answer":
        return _agent_answer(data)
    if event == "safety":
        out = [f"safety: risk level {data.get('risk_level', 0)}"]
        out += [f"  warning: {w}" for w in data.get("warnings", [])]
        out += [f"  notice: {n}" for n in data.get("notices", [])]
        return [*out, f"disclaimer: {data.get('disclaimer', '')}"]
    if event == "done":
        return [f"done in {data.get('inference_time_ms', 0) / 1000:.1f} s"]
    if event == "error":
        return [f"error: {data.get('message', data)}"]
    return []


def error_message(status: int, body: bytes) -> str:
    """The API's own message for a 4xx/5xx answer (OpenAI-shaped error), else the body."""
    try:
        err = json.loads(body)
        msg = err.get("error", {}).get("message") or err.get("detail")
    except (ValueError, AttributeError):
        msg = None
    return f"the app answered {status}: {msg or body.decode(errors='replace')[:300]}"


def analyze_stream(url: str, body: dict, api_key: str) -> Iterator[tuple[str, Any]]:
    """POST ``body`` to ``{url}/v1/analyze``; yield its events as they arrive."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    endpoint = url.rstrip("/") + "/v1/analyze"
    try:
        with httpx.stream("POST", endpoint, json=body, headers=headers, timeout=600) as resp:
            if resp.status_code != 200:
                raise click.ClickException(error_message(resp.status_code, resp.read()))
            yield from read_events(resp.iter_lines())
    except httpx.TransportError as e:
        raise click.ClickException(
            f"cannot reach the MedRay app at {url} ({type(e).__name__}: {e}); start it with "
            "`medray cluster up && medray serve up`, or pass --url / set MEDRAY_URL"
        ) from None


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("question", default="")
@click.option("--model", default=None, help="Base model or LoRA adapter name (GET /v1/models).")
@click.option("--url", default=None, help=f"The app's URL [default: $MEDRAY_URL or {DEFAULT_URL}].")
@click.option(
    "--api-key", default=None, help="Bearer key [default: $MEDRAY_API_KEY; none on localhost]."
)
@click.option("-k", "k", default=3, show_default=True, help="Similar cases and knowledge passages.")
@click.option(
    "--max-new-tokens", type=int, default=None, help="Reasoning length [default: the app's]."
)
@click.option("--no-agent", is_flag=True, help="Skip the agentic RAG step.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the raw events, one JSON object a line."
)
def analyze(image, question, model, url, api_key, k, max_new_tokens, no_agent, as_json) -> None:
    """Ask the Serve app about IMAGE (a PNG, JPEG or DICOM file): POST /v1/analyze.

    Prints the events as they arrive: guard, the caption, each reasoning step, the answer,
    the parsed result and boxes, the summary, similar cases, knowledge, the agent's answer
    with citations, safety and the research-use disclaimer. Exit code 1 if an error event
    came back.
    """
    data, mime = read_image(image)
    body: dict[str, Any] = {
        "image": f"data:{mime};base64," + base64.b64encode(data).decode(),
        "question": question,
        "k": k,
        "agent": not no_agent,
    }
    if model:
        body["model"] = model
    if max_new_tokens:
        body["max_new_tokens"] = max_new_tokens
    url = url or os.environ.get("MEDRAY_URL") or DEFAULT_URL
    api_key = api_key if api_key is not None else os.environ.get("MEDRAY_API_KEY", "")
    failed = False
    for event, payload in analyze_stream(url, body, api_key):
        failed |= event == "error"
        if as_json:
            click.echo(json.dumps({"event": event, "data": payload}, ensure_ascii=False))
        else:
            for line in event_lines(event, payload):
                click.echo(line)
    if failed:
        raise SystemExit(1)
