"""``medray demo``: the main job on embedded defaults, from nothing to a served answer.

The console shows one line per step and per pipeline stage (as it ends) and the figures
at the end; the job's full output (Ray's logs included) goes to a log file whose path is
printed first.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import click

from medray.cli.demo_figures import MIN_JSON_VALIDITY, _check, figures  # noqa: F401 (re-exported)
from medray.paths import repo_root, runs_dir


@click.command()
@click.option(
    "--nodes", type=int, default=3, show_default=True, help="Ray nodes of the local cluster."
)
@click.option(
    "--cluster-config",
    "cluster_config_file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Cluster settings YAML (ports, CPUs per node) [default: cluster/local.yaml].",
)
@click.option("--keep-up", is_flag=True, help="Leave the cluster (and the Serve app) running.")
@click.option(
    "--serve-port",
    type=int,
    default=8000,
    show_default=True,
    help="HTTP port of the Serve app the pipeline's serve stage deploys.",
)
@click.option("--no-serve", is_flag=True, help="Skip the serve stage and the analyze request.")
@click.option(
    "--config",
    "config_file",
    default="jobs/configs/pipeline_tiny.yaml",
    show_default=True,
    help="Pipeline config (relative to the repo).",
)
@click.argument("overrides", nargs=-1)
def demo(
    nodes: int,
    cluster_config_file: str | None,
    keep_up: bool,
    serve_port: int,
    no_serve: bool,
    config_file: str,
    overrides: tuple[str, ...],
) -> None:
    """Bring a local cluster up, build the tiny models, run the pipeline job through
    `ray job submit` (preprocess, CLIP, index, search, reasoner SFT and GRPO, summariser
    SFT, batch inference, evaluation, serve), send the Serve app it deployed one analyze
    request (answered by the trained adapter), print the figures, and bring the cluster
    down.

    OVERRIDES are key=value pairs for the pipeline config (e.g. grpo.grpo.optim.max_steps=8,
    stages=[preprocess,train_clip,index,search]).
    """
    from jobs.pipeline import PipelineConfig
    from medray.cli.cluster import cluster_config
    from medray.cluster import local
    from medray.config import ConfigError, load_config

    t0 = time.perf_counter()
    run_name = time.strftime("demo-%Y%m%d-%H%M%S")
    overrides = (*overrides, f"serve.port={serve_port}")
    if no_serve:
        overrides = (*overrides, "serve.deploy=false")
    try:  # bad input fails here, before any cluster or worker starts
        plan = load_config(PipelineConfig, repo_root() / config_file, list(overrides))
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    log_path = runs_dir() / f"{run_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    click.echo(f"Full log (the job's output and Ray's logs): {log_path}")
    for note in plan.serve_notes():
        click.echo(f"  serve plan: {note}")
    existing = local.read_state()
    reuse = existing is not None and local.status(existing)["healthy"]
    summary: dict[str, Any] | None = None
    served = False
    try:
        if reuse:
            state = existing
            click.echo("[1/5] Using the local cluster that is already running.")
        else:
            cfg = cluster_config(cluster_config_file, {"nodes": nodes})
            click.echo(f"[1/5] Starting a local cluster: {cfg.nodes} Ray nodes + Milvus Lite ...")
            try:
                state, _ = local.up(cfg)
            except local.ClusterError as e:
                raise click.ClickException(f"{e}\nNothing was left running.") from None
        click.echo(f"      dashboard {state.dashboard_url}, Milvus {state.milvus_uri}")
        _build_presets(log_path)
        click.echo(f"[3/5] Pipeline job {run_name} (ray job submit); one line per stage:")
        rc = _run_pipeline(config_file, run_name, overrides, log_path)
        if rc != 0:
            raise click.ClickException(f"the pipeline job failed (exit {rc}); see {log_path}")
        summary = json.loads((runs_dir() / run_name / "summary.json").read_text())
        serve_out = summary.get("outputs", {}).get("serve")
        served = bool(serve_out) and summary["stages"]["serve"].get("deployed", False)
        if served:
            click.echo(f"[4/5] One analyze request to the Serve app at {serve_out['url']} ...")
            summary["analyze"] = _analyze(summary, serve_out)
            _print_urls(serve_out, keep_up)
    finally:
        if served and not keep_up:
            from medray.serving.deploy import remove

            remove(state.dashboard_url, "medray")
        if not reuse and not keep_up:
            click.echo("[5/5] Stopping the local cluster ...")
            local.down()
    _print_figures(summary, time.perf_counter() - t0)


def _build_presets(log_path: Path) -> None:
    """Build the tiny presets (cached); their build logs and progress bars go to the log."""
    import contextlib
    import logging

    from medray.models import PRESETS, ensure_built

    t = time.perf_counter()
    names = [p.name for p in PRESETS.values() if p.source == "tiny"]
    handler = logging.FileHandler(log_path)
    root = logging.getLogger()
    consoles = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    with (
        log_path.open("a") as log,
        contextlib.redirect_stderr(log),
        contextlib.redirect_stdout(log),
    ):
        for h in consoles:
            root.removeHandler(h)
        root.addHandler(handler)
        try:
            for p in PRESETS.values():
                if p.source == "tiny":
                    ensure_built(p)
        finally:
            root.removeHandler(handler)
            for h in consoles:
                root.addHandler(h)
    click.echo(
        f"[2/5] Tiny model presets ready ({', '.join(names)}) in {time.perf_counter() - t:.0f}s"
    )


def _run_pipeline(config_file: str, run_name: str, overrides, log_path: Path) -> int:
    """Submit the pipeline job with its output in ``log_path``; echo each stage's line as
    the stage ends (the lines the pipeline starts with ``STAGE_MARK``)."""
    from jobs.pipeline import STAGE_MARK
    from medray.cli.job import submit

    entry = ["python", "-m", "jobs.pipeline", "--config", config_file, f"run.name={run_name}"]
    entry += list(overrides)
    result: dict[str, int] = {}
    with log_path.open("a") as log:
        worker = threading.Thread(
            target=lambda: result.setdefault("rc", submit(entry, repo_root(), stdout=log)),
            daemon=True,
        )
        worker.start()
        with log_path.open() as reader:
            while True:
                done = not worker.is_alive()
                for line in reader.readlines():
                    at = line.find(STAGE_MARK)  # after any progress bar's cursor codes
                    if at >= 0 and line[at:].split("] ", 1)[0][len(STAGE_MARK) :].count("/"):
                        click.echo("  " + line[at:].rstrip())
                if done:
                    break
                time.sleep(1.0)
    return result.get("rc", 1)


def _held_out_row(summary: dict[str, Any]) -> dict[str, Any]:
    """The first held-out VQA row the batch inference answered (image, question, answer)."""
    from medray.data.output import read_table

    cols = ["sample_id", "task", "question", "answer", "image"]
    table = read_table(summary["outputs"]["data"], "test", columns=cols)
    rows = sorted(
        (r for r in table.to_pylist() if r["task"] == "vqa"), key=lambda r: r["sample_id"]
    )
    return rows[0]


def _analyze(summary: dict[str, Any], serve_out: dict[str, Any]) -> dict[str, Any]:
    """One /v1/analyze request with a held-out image, answered by the trained adapter."""
    import base64
    import logging

    import httpx

    from medray.serving.sse import read_events

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    row = _held_out_row(summary)
    model = serve_out["default_model"]
    body = {
        "image": base64.b64encode(row["image"]).decode(),
        "question": row["question"],
        "model": model,
    }
    events: dict[str, Any] = {}
    t = time.perf_counter()
    with httpx.stream("POST", f"{serve_out['url']}/v1/analyze", json=body, timeout=600) as resp:
        if resp.status_code != 200:
            resp.read()
            raise click.ClickException(f"analyze returned {resp.status_code}: {resp.text[:500]}")
        for event, data in read_events(resp.iter_lines()):
            if event not in ("token", "step"):
                events[event] = data
    reasoning = events.get("reasoning", {})
    agent = events.get("agent_answer") or {}
    out = {
        "model": model,
        "sample_id": row["sample_id"],
        "question": row["question"],
        "reference": row["answer"],
        "seconds": round(time.perf_counter() - t, 1),
        "reasoning_ok": bool(reasoning.get("ok")),
        "answer": (reasoning.get("parsed") or {}).get("answer"),
        "reasoning_text": reasoning.get("text", ""),
        "summary": events.get("summary", {}).get("text"),
        "agent": {
            k: agent.get(k)
            for k in ("status", "most_likely_diagnosis", "confidence", "notice", "missing")
        }
        if agent
        else None,
        "disclaimer": (events.get("safety") or {}).get("disclaimer"),
    }
    click.echo(
        f"  model {model!r} on held-out {row['sample_id']}: Q {row['question']!r} -> "
        f"answer {out['answer']!r} (reference {row['answer']!r}); reasoning.ok "
        f"{str(out['reasoning_ok']).lower()}; summary {out['summary']!r}; {out['seconds']}s"
    )
    if out["agent"]:
        click.echo(f"  agent: {json.dumps(out['agent'])}")
    return out


def served_urls(serve_out: dict[str, Any]) -> dict[str, str]:
    """The endpoints of the app the pipeline's serve stage deployed, the web UI among
    them: ``endpoint_urls`` (what `medray serve up` prints) of the config it wrote."""
    import yaml

    from medray.serving.deploy import endpoint_urls

    return endpoint_urls(yaml.safe_load(Path(serve_out["config"]).read_text()))


def _print_urls(serve_out: dict[str, Any], keep_up: bool) -> None:
    note = "" if keep_up else " (until the demo removes the app; --keep-up keeps it)"
    click.echo(f"      endpoints{note}:")
    for name, url in served_urls(serve_out).items():
        click.echo(f"        {name:15s} {url}")


def _print_figures(summary: dict[str, Any] | None, seconds: float) -> None:
    click.echo("")
    click.echo(f"Demo finished in {seconds:.0f}s.")
    if summary is None:
        return
    for name, value, ok in figures(summary):
        click.echo(f"  {name}: {value}  [{_check(ok)}]")
    click.echo(f"Results: {summary['output_dir']}  (summary.json there)")
    if summary.get("report"):
        report_dir = Path(summary["report"]).parent
        click.echo(
            f"Report:  {summary['report']}  (headline figures: medray report show {report_dir})"
        )
    (Path(summary["output_dir"]) / "demo.json").write_text(
        json.dumps(
            {
                "seconds": round(seconds, 1),
                "figures": figures(summary),
                "analyze": summary.get("analyze"),
            },
            indent=2,
        )
    )
