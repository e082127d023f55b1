"""The web UI's Reports tab: evaluation runs (``jobs/evaluate.py`` output folders under
the runs directory) with their headline table and plots, and two runs side by side.

It reads the reports with :mod:`medray.eval` (``load_report``, ``headline_rows``,
:func:`medray.eval.compare.compare`: what ``medray report show|compare`` print) and only
the folders :func:`medray.eval.folders.list_report_dirs` finds under the runs directory:
a name typed into the page never becomes a path. The user's key is checked by the API
(``/v1/models``) first, so the tab is behind the same access rules as the rest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from medray.eval import compare as cmp
from medray.eval.folders import list_report_dirs
from medray.eval.report import ReportError, headline_rows, load_report
from medray.eval.report_sections import fmt, markdown_table

from .client import ApiClient, ApiError

log = logging.getLogger(__name__)


def report_choices(root: Path) -> list[str]:
    """The report folders under ``root``, as paths relative to it (newest first)."""
    return [str(p.relative_to(root)) for p in list_report_dirs(root)]


def _folder(root: Path, name: str | None) -> Path | None:
    if not name:
        return None
    if name not in report_choices(root):
        raise ReportError(f"{name!r} is not an evaluation report under the runs directory")
    return root / name


def headline_markdown(name: str, rep: dict[str, Any]) -> str:
    """The report's headline figures, one column per model (``medray report show``)."""
    labels = [r["label"] for r in rep["runs"]]
    rows = [[str(k), *[fmt(v) for v in vals]] for k, *vals in headline_rows(rep["runs"])]
    head = f"#### {name}\n{rep['dataset']} [{rep['split']}], {rep['n_rows']} rows, created {rep['created']}"
    return head + "\n\n" + markdown_table(["metric", *labels], rows)


def plots(folder: Path, rep: dict[str, Any]) -> list[tuple[Image.Image, str]]:
    """The report's plots (PNG files it lists), with their names as captions."""
    out = []
    for title, filename in sorted(rep.get("figures", {}).items()):
        path = folder / filename
        if path.is_file():
            with Image.open(path) as im:
                out.append((im.convert("RGB"), title))
    return out


def compare_markdown(a: Path, rep_a: dict, b: Path, rep_b: dict, root: Path) -> str:
    """``medray report compare``'s table for the first model of A and of B (the last
    model of B when both are one folder)."""
    label_b = rep_b["runs"][-1]["label"] if a == b else None
    result = cmp.compare(
        rep_a, rep_b, None, label_b, str(a.relative_to(root)), str(b.relative_to(root))
    )
    return cmp.render_markdown(result)


def view(root: Path, name_a: str | None, name_b: str | None) -> tuple[str, list, str, list, str]:
    """``(A's table, A's plots, B's table, B's plots, comparison)`` for the chosen runs."""
    out: list[Any] = ["", [], "", [], ""]
    loaded = []
    for i, name in enumerate((name_a, name_b)):
        folder = _folder(root, name)
        if folder is None:
            continue
        rep = load_report(folder)
        out[2 * i], out[2 * i + 1] = headline_markdown(name, rep), plots(folder, rep)
        loaded.append((folder, rep))
    if len(loaded) == 2:
        (a, rep_a), (b, rep_b) = loaded
        out[4] = compare_markdown(a, rep_a, b, rep_b, root)
    return tuple(out)  # type: ignore[return-value]


def build_reports_tab(api_key: gr.Textbox, base_url, runs_root: Path) -> None:
    """The tab's components and events, inside an open ``gr.Blocks``."""

    def refresh(key: str, request: gr.Request):
        try:
            ApiClient(base_url(request), key).models()  # the key, checked by the API
        except ApiError as e:
            return gr.update(), gr.update(), f"**Error ({e.status}):** {e}"
        except Exception as e:
            return (
                gr.update(),
                gr.update(),
                f"**Error:** the API did not answer ({type(e).__name__})",
            )
        names = report_choices(runs_root)
        if not names:
            msg = f"**No evaluation reports** under {runs_root} (run `python -m jobs.evaluate`)."
            return gr.update(choices=[]), gr.update(choices=[]), msg
        first = names[0]
        second = names[1] if len(names) > 1 else None
        return (
            gr.update(choices=names, value=first),
            gr.update(choices=["", *names], value=second or ""),
            f"**{len(names)} evaluation reports** under {runs_root}.",
        )

    def show(key: str, name_a: str, name_b: str, request: gr.Request):
        try:
            ApiClient(base_url(request), key).models()
            return ("", *view(runs_root, name_a, name_b or None))
        except ApiError as e:
            return (f"**Error ({e.status}):** {e}", "", [], "", [], "")
        except ReportError as e:
            return (f"**Error:** {e}", "", [], "", [], "")
        except Exception as e:
            log.warning("ui reports: %s", type(e).__name__)
            return (
                f"**Error:** the report could not be read ({type(e).__name__})",
                "",
                [],
                "",
                [],
                "",
            )

    with gr.Tab("Reports"):
        with gr.Row():
            load = gr.Button("List evaluation runs", elem_id="medray-reports-list")
            run_a = gr.Dropdown([], label="Run A", elem_id="medray-run-a")
            run_b = gr.Dropdown([], label="Run B (optional)", elem_id="medray-run-b")
            open_ = gr.Button("Open", variant="primary", elem_id="medray-reports-open")
        status = gr.Markdown(elem_id="medray-reports-status")
        comparison = gr.Markdown(elem_id="medray-compare")
        with gr.Row():
            with gr.Column():
                table_a = gr.Markdown(elem_id="medray-report-a")
                plots_a = gr.Gallery(label="Plots (A)", columns=2, elem_id="medray-plots-a")
            with gr.Column():
                table_b = gr.Markdown(elem_id="medray-report-b")
                plots_b = gr.Gallery(label="Plots (B)", columns=2, elem_id="medray-plots-b")
        load.click(refresh, [api_key], [run_a, run_b, status])
        open_.click(
            show,
            [api_key, run_a, run_b],
            [status, table_a, plots_a, table_b, plots_b, comparison],
            api_name="reports",
        )
