"""``medray serve up | down | status``: the MedRay Serve app on the local cluster."""

from __future__ import annotations

import json
import time

import click

from medray.cli.options import quiet_ray_sdk
from medray.serving.deploy import DEFAULT_CONFIG


def _dashboard(address: str | None) -> str:
    quiet_ray_sdk()
    if address:
        return address
    from medray.cli.cluster import require_state

    return require_state().dashboard_url


def blame(config_file: str, overrides, error: Exception) -> str:
    """``error`` of a Serve config with overrides, prefixed with its source: the file
    itself, or the first command-line override that is wrong on its own."""
    from medray.config import blame as blame_source
    from medray.serving.deploy import load_serve_config

    return blame_source(
        error, config_file, lambda items: load_serve_config(config_file, items), overrides
    )


def drop_unbuilt(config: dict) -> dict:
    """Drop the settings of deployments the graph will not build (Serve refuses settings
    of a deployment that does not exist): Retriever without ``retrieval.enabled``, Agent
    without ``agent.enabled``. Returns ``config`` (changed in place)."""
    from medray.serving.settings import parse_args

    app = config["applications"][0]
    args = parse_args(app.get("args") or {})
    unbuilt = {"Retriever": not args.retrieval.enabled, "Agent": not args.agent.enabled}
    app["deployments"] = [d for d in app.get("deployments") or [] if not unbuilt.get(d["name"])]
    return config


def check_fits(config, dashboard: str) -> None:
    """Refuse, before deploying, an app whose replicas the cluster's nodes cannot hold."""
    from medray.cluster.demands import check_fits as problems_of
    from medray.cluster.pending import Dashboard, DashboardError, ray_token

    try:
        nodes = Dashboard(dashboard, ray_token()).node_totals()
    except DashboardError as e:
        raise click.ClickException(f"cannot read the cluster's nodes: {e}") from None
    problems = problems_of(config, nodes)
    if problems:
        raise click.ClickException(
            "the Serve app does not fit this cluster, nothing was deployed:\n  - "
            + "\n  - ".join(problems)
        )


def print_urls(config) -> None:
    """Print the app's endpoint URLs."""
    from medray.serving.deploy import endpoint_urls

    for name, url in endpoint_urls(config).items():
        click.echo(f"  {name:15s} {url}")


@click.group()
def serve() -> None:
    """The MedRay Ray Serve application (gateway, guard, reasoner, summariser, embedder,
    retriever) on the running local cluster."""


@serve.command()
@click.option(
    "--config",
    "config_file",
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Serve config file (relative to the repo).",
)
@click.option("--host", default=None, help="HTTP host [default: from the config, 127.0.0.1].")
@click.option(
    "--port",
    type=int,
    default=None,
    envvar="MEDRAY_SERVE_PORT",
    help="HTTP port [default: $MEDRAY_SERVE_PORT, else from the config, 8000].",
)
@click.option(
    "--address",
    default=None,
    help="Ray dashboard URL [default: the `medray cluster up` cluster's].",
)
@click.option(
    "--timeout", type=float, default=600, show_default=True, help="Seconds to wait for RUNNING."
)
@click.argument("overrides", nargs=-1)
def up(config_file, host, port, address, timeout, overrides) -> None:
    """Deploy the app (this repo as working dir), wait until it runs, print the URLs.

    OVERRIDES are key=value pairs for the app args, e.g. generation.max_new_tokens=32
    or retrieval.enabled=false. Listening beyond 127.0.0.1 requires API keys
    (MEDRAY_API_KEYS in the cluster's environment, or a key file on every node named by
    auth.api_keys_file=/abs/path; never the keys themselves in OVERRIDES: the Ray
    dashboard shows the app's config).
    """
    from medray.config import ConfigError
    from medray.serving.deploy import ServeDeployError, deploy, load_serve_config

    try:
        config = drop_unbuilt(load_serve_config(config_file, overrides, host=host, port=port))
    except ConfigError as e:
        raise click.UsageError(blame(config_file, overrides, e)) from None
    dashboard = _dashboard(address)
    name = config["applications"][0]["name"]
    check_fits(config, dashboard)
    click.echo(f"Deploying Serve app {name!r} from {config_file} to {dashboard} ...")
    try:
        deploy(config, dashboard, wait_s=timeout)
    except ServeDeployError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Serve app {name!r} is running. Endpoints:")
    print_urls(config)


@serve.command()
@click.option("--name", default="medray", show_default=True, help="Serve application name.")
@click.option("--address", default=None, help="Ray dashboard URL [default: the local cluster's].")
def down(name, address) -> None:
    """Remove the app (Serve shuts down when it was the only app)."""
    from medray.serving.deploy import ServeDeployError, remove

    try:
        removed = remove(_dashboard(address), name)
    except ServeDeployError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Removed Serve app {name!r}." if removed else f"No Serve app {name!r} is running.")


@serve.command()
@click.option("--name", default="medray", show_default=True, help="Serve application name.")
@click.option("--address", default=None, help="Ray dashboard URL [default: the local cluster's].")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(name, address, as_json) -> None:
    """App status and running replicas per deployment; exit 1 unless RUNNING."""
    import sys

    from medray.serving.deploy import app_details, replica_counts

    dashboard = _dashboard(address)
    details = app_details(dashboard, name)
    if details is None:
        click.echo(f"No Serve app {name!r} is running.")
        sys.exit(1)
    replicas = replica_counts(dashboard, name)
    if as_json:
        click.echo(json.dumps({"status": details.get("status"), "replicas": replicas}, indent=2))
    else:
        from medray.cli import table

        click.echo(f"App {name!r}: {details.get('status')}")
        deps = details.get("deployments") or {}
        table.echo(
            ["deployment", "status", "running replicas"],
            [[d, (deps.get(d) or {}).get("status", "?"), n] for d, n in replicas.items()],
            right=(2,),
        )
    if details.get("status") != "RUNNING":
        sys.exit(1)


def analyze_once(base_url: str, question: str, headers: dict[str, str] | None = None) -> list[str]:
    """Send one /v1/analyze request with a generated chest-X-ray-like image; return the
    event types in the order they arrived."""
    import base64
    import io

    import httpx
    from PIL import Image, ImageDraw

    from medray.serving.sse import read_events

    img = Image.new("L", (224, 224), 25)
    d = ImageDraw.Draw(img)
    d.ellipse([40, 30, 104, 190], fill=150)
    d.ellipse([120, 30, 184, 190], fill=140)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "PNG")
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "question": question}
    kinds: list[str] = []
    with httpx.stream(
        "POST", f"{base_url}/v1/analyze", json=body, headers=headers or {}, timeout=300
    ) as resp:
        if resp.status_code != 200:
            resp.read()
            raise click.ClickException(f"analyze returned {resp.status_code}: {resp.text[:500]}")
        for kind, data in read_events(resp.iter_lines()):
            kinds.append(kind)
            if kind.startswith("agent_"):
                _echo_agent_event(kind, data)
    return kinds


def _echo_agent_event(kind: str, data: dict) -> None:
    """One line per agent event; the final structured answer in full (without the trace)."""
    if kind == "agent_queries":
        click.echo(f"    agent queries: {data['queries']}")
    elif kind == "agent_sources":
        labels = [f"{s['label']}={s['title'] or s['id']}"[:60] for s in data["sources"]]
        click.echo(f"    agent sources (cycle {data['cycle']}): {labels} {data['errors'] or ''}")
    elif kind == "agent_reflection":
        click.echo(
            f"    agent reflection: confidence {data['confidence']} "
            f"(threshold {data['threshold']}) -> {data['reason']}"
        )
    elif kind == "agent_revision":
        click.echo(f"    agent revision {data['cycle']}: new queries {data['queries']}")
    elif kind == "agent_answer":
        answer = {k: v for k, v in data.items() if k != "trace"}
        answer["citations"] = [f"{c['label']}: {c['title'] or c['id']}" for c in data["citations"]]
        answer["safety_report"] = {"risk_level": data["safety_report"]["risk_level"]}
        click.echo("    agent answer (structured; the trace has every step's input and output):")
        click.echo("      " + json.dumps(answer, indent=2).replace("\n", "\n      "))


def serve_demo(dashboard_url: str, port: int, clip_model: str | None = None) -> None:
    """Deploy the app, send one analyze request, print what came back and the URLs,
    remove the app (used by ``medray demo``). ``clip_model``: the CLIP the ``cases``
    collection was indexed with (the pipeline's fine-tuned checkpoint), so that the app
    embeds queries with the same model."""
    from medray.serving.deploy import ServeDeployError, deploy, load_serve_config, remove

    overrides = ["generation.max_new_tokens=32"]
    if clip_model:
        overrides.append(f"models.clip={clip_model}")
    config = load_serve_config(DEFAULT_CONFIG, overrides, port=port)
    check_fits(config, dashboard_url)
    t0 = time.perf_counter()
    try:
        deploy(config, dashboard_url, wait_s=600)
    except ServeDeployError as e:
        raise click.ClickException(str(e)) from None
    try:
        click.echo(f"  Serve app running after {time.perf_counter() - t0:.0f}s; endpoints:")
        print_urls(config)
        base = f"http://127.0.0.1:{port}"
        t1 = time.perf_counter()
        kinds = analyze_once(base, "Is there a pleural effusion?")
        counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
        click.echo(
            f"  POST /v1/analyze -> {len(kinds)} events in {time.perf_counter() - t1:.1f}s: "
            + ", ".join(f"{k} x{n}" if n > 1 else k for k, n in counts.items())
        )
    finally:
        remove(dashboard_url, config["applications"][0]["name"])
        click.echo("  Serve app removed.")
