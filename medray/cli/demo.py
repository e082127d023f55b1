"""``medray demo``: the main job on embedded defaults, from nothing to results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

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
@click.option("--keep-up", is_flag=True, help="Leave the cluster running afterwards.")
@click.option(
    "--serve-port",
    type=int,
    default=8000,
    show_default=True,
    help="HTTP port of the Serve app the demo starts.",
)
@click.option("--no-serve", is_flag=True, help="Skip starting the Serve app.")
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
    SFT, batch inference, evaluation), start the Serve app and send it one analyze
    request, print where the results and the evaluation report are, and bring the
    cluster down.

    OVERRIDES are key=value pairs for the pipeline config (e.g. grpo.grpo.optim.max_steps=8,
    stages=[preprocess,train_clip,index,search]).
    """
    from medray.cli.cluster import cluster_config, print_endpoints
    from medray.cli.job import submit
    from medray.cluster import local
    from medray.models import PRESETS, ensure_built

    t0 = time.perf_counter()
    existing = local.read_state()
    reuse = existing is not None and local.status(existing)["healthy"]
    if reuse:
        state = existing
        click.echo("Using the local cluster that is already running.")
    else:
        cfg = cluster_config(cluster_config_file, {"nodes": nodes})
        click.echo(f"[1/5] Starting a local cluster: {cfg.nodes} Ray nodes + Milvus Lite ...")
        try:
            state, _ = local.up(cfg)
        except local.ClusterError as e:
            raise click.ClickException(f"{e}\nNothing was left running.") from None
    print_endpoints(state)
    try:
        click.echo("[2/5] Building tiny model presets (cached after the first run) ...")
        for p in PRESETS.values():
            if p.source == "tiny":
                t = time.perf_counter()
                ensure_built(p)
                click.echo(f"  {p.name:16s} {time.perf_counter() - t:5.1f}s")
        run_name = time.strftime("demo-%Y%m%d-%H%M%S")
        click.echo(f"[3/5] Submitting the pipeline job ({run_name}) with ray job submit ...")
        entry = [
            "python",
            "-m",
            "jobs.pipeline",
            "--config",
            config_file,
            f"run.name={run_name}",
            *overrides,
        ]
        rc = submit(entry, repo_root())
        if rc != 0:
            raise click.ClickException(f"the pipeline job failed (exit {rc}); its log is above")
        summary_path = runs_dir() / run_name / "summary.json"
        summary = json.loads(summary_path.read_text())
        if not no_serve:
            from medray.cli.serve import serve_demo

            click.echo("[4/5] Starting the Serve app and sending one analyze request ...")
            serve_demo(
                state.dashboard_url, serve_port, summary.get("outputs", {}).get("clip_model")
            )
    finally:
        if not reuse and not keep_up:
            click.echo("[5/5] Stopping the local cluster ...")
            stopped = local.down()
            click.echo(f"  stopped {len(stopped)} processes")
    click.echo("")
    click.echo(f"Demo finished in {time.perf_counter() - t0:.0f}s.")
    width = max((len(n) for n in summary["stages"]), default=0)
    for name, stage in summary["stages"].items():
        click.echo(f"  {name:<{width}}  {stage['stage_seconds']:6.1f}s  {stage['line']}")
    click.echo(f"  nodes used: {len(summary['nodes_used'])} of {summary['cluster_nodes']}")
    click.echo(f"Results: {summary['output_dir']}  (summary: {summary_path})")
    if summary.get("report"):
        report_dir = Path(summary["report"]).parent
        click.echo(
            f"Report:  {summary['report']}  (headline figures: medray report show {report_dir})"
        )
