"""``medray cluster up | status | down | env``: the local multi-node cluster with Milvus."""

from __future__ import annotations

import json
import sys

import click

from medray.paths import repo_root

DEFAULT_FILE = repo_root() / "cluster" / "local.yaml"


def cluster_config(config_file: str | None, overrides: dict[str, object]):
    from medray.cluster.local import LocalClusterConfig
    from medray.config import ConfigError, load_config

    path = config_file or (str(DEFAULT_FILE) if DEFAULT_FILE.is_file() else None)
    given = {k: v for k, v in overrides.items() if v is not None}
    # Blame the right source: the file alone first, then each command-line flag.
    try:
        load_config(LocalClusterConfig, path)
    except ConfigError as e:
        raise click.UsageError(f"{e} (fix the file, or pass another with --config)") from None
    for key, value in given.items():
        try:
            load_config(LocalClusterConfig, path, [f"{key}={value}"])
        except ConfigError as e:
            reason = str(e).split(": ", 1)[-1]
            flag = "--" + key.replace("_", "-")
            raise click.BadParameter(f"{value!r}: {reason}", param_hint=flag) from None
    try:
        return load_config(LocalClusterConfig, path, [f"{k}={v}" for k, v in given.items()])
    except ConfigError as e:
        raise click.UsageError(f"the command-line flags together: {e}") from None


def print_endpoints(state) -> None:
    click.echo(f"  Dashboard:       {state.dashboard_url}")
    click.echo(f"  Ray address:     {state.ray_address}   (drivers, `ray status`)")
    click.echo(f"  Job submission:  {state.dashboard_url}   (`ray job submit --address ...`)")
    click.echo(f"  Milvus URI:      {state.milvus_uri}")
    click.echo("  Token auth:      on (RAY_AUTH_MODE=token, token in ~/.ray/auth_token)")


@click.group()
def cluster() -> None:
    """Local multi-node Ray cluster plus a Milvus Lite server (the embedded default)."""


@cluster.command()
@click.option(
    "--nodes", type=int, default=None, help="Ray nodes to start, head included [default: 3]."
)
@click.option(
    "--cpus-per-node", type=int, default=None, help="Logical CPUs each node offers [default: 1]."
)
@click.option(
    "--serve-cpus",
    type=float,
    default=None,
    help="`medray_serve` resource on the head for the local Serve app's replicas [default: 2].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Cluster settings YAML [default: {DEFAULT_FILE.relative_to(repo_root())}].",
)
@click.option("--ray-port", type=int, default=None, help="GCS port of the head [default: 6379].")
@click.option(
    "--dashboard-port", type=int, default=None, help="Dashboard / job API port [default: 8265]."
)
@click.option(
    "--client-port", type=int, default=None, help="Ray client server port [default: 10001]."
)
@click.option(
    "--milvus-port", type=int, default=None, help="Milvus Lite gRPC port [default: 19530]."
)
@click.option(
    "--milvus-data-dir", default=None, help="Milvus data folder [default: $MEDRAY_HOME/milvus]."
)
def up(
    nodes,
    cpus_per_node,
    serve_cpus,
    config_file,
    ray_port,
    dashboard_port,
    client_port,
    milvus_port,
    milvus_data_dir,
) -> None:
    """Start a Ray head, NODES-1 worker nodes and Milvus Lite on this machine.

    Safe to run twice: if the same cluster is already up it is left as it is.
    """
    from medray.cluster import local

    cfg = cluster_config(
        config_file,
        {
            "nodes": nodes,
            "cpus_per_node": cpus_per_node,
            "serve_cpus": serve_cpus,
            "ray_port": ray_port,
            "dashboard_port": dashboard_port,
            "client_port": client_port,
            "milvus_port": milvus_port,
            "milvus_data_dir": milvus_data_dir,
        },
    )
    click.echo(
        f"Starting {cfg.nodes} Ray nodes ({cfg.cpus_per_node} CPU each; the head also offers "
        f"medray_serve {cfg.serve_cpus:g} for the Serve app) and Milvus Lite ..."
    )
    try:
        state, started = local.up(cfg)
    except local.ClusterError as e:
        raise click.ClickException(f"{e}\nNothing was left running.") from None
    click.echo(
        "MedRay local cluster is up." if started else "MedRay local cluster is already running."
    )
    print_endpoints(state)
    click.echo('Use plain `ray` / `ray job submit` in this shell:  eval "$(medray cluster env)"')
    click.echo("Submit a MedRay job:  medray job submit -- python -m jobs.pipeline")


@cluster.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(as_json: bool) -> None:
    """Show nodes, Milvus and recorded processes; exit 1 unless healthy."""
    from medray.cli import table
    from medray.cluster import local

    try:
        info = local.status()
    except local.ClusterError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(info, indent=2))
    elif not info["running"]:
        click.echo("No local MedRay cluster is running (start one with `medray cluster up`).")
    else:
        click.echo(f"Cluster: {'healthy' if info['healthy'] else 'UNHEALTHY'}")
        click.echo(f"Ray nodes alive: {len(info['alive_nodes'])} of {info['expected_nodes']}")
        gib = 1024**3
        table.echo(
            ["role", "node id", "CPU", "memory GiB", "custom resources"],
            [
                [
                    "head" if n["head"] else "worker",
                    n["node_id"][:12],
                    f"{n['resources'].get('CPU', 0):g}",
                    f"{n['resources'].get('memory', 0) / gib:.1f}",
                    ", ".join(
                        f"{k}={v:g}"
                        for k, v in sorted(n["resources"].items())
                        if k not in ("CPU", "memory", "object_store_memory")
                    ),
                ]
                for n in info["alive_nodes"]
            ],
            right=(2, 3),
        )
        click.echo(f"Milvus ({info['milvus_uri']}): {info['milvus']}")
        dead = [r for r, ok in info["processes"].items() if not ok]
        if dead:
            click.echo(f"Dead processes: {', '.join(dead)}")
        click.echo(f"Dashboard: {info['dashboard_url']}")
    if not info.get("healthy"):
        sys.exit(1)


@cluster.command()
def down() -> None:
    """Stop exactly the processes `medray cluster up` started."""
    from medray.cluster import local

    try:
        stopped = local.down()
    except local.ClusterError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"Stopped {len(stopped)} processes." if stopped else "No local MedRay cluster was running."
    )


@cluster.command()
def env() -> None:
    """Print shell exports for the running cluster: eval "$(medray cluster env)"."""
    from medray.cluster import local

    for k, v in local.client_env(require_state()).items():
        click.echo(f"export {k}={v}")


def require_state():
    """The running cluster's state, or a clear error."""
    from medray.cluster import local

    state = local.read_state()
    if state is None:
        raise click.ClickException(
            "no local cluster is running; start one with `medray cluster up`"
        )
    return state


def local_milvus_uri(uri: str = "") -> str:
    """``uri``, else ``$MEDRAY_MILVUS_URI``, else the running local cluster's Milvus Lite,
    else "" (the library's default, ``http://127.0.0.1:19530``).

    The stores take their URI as an argument; finding the local dev cluster's Milvus from
    its state file is a CLI concern and lives here.
    """
    import os

    from medray.cluster import local
    from medray.retrieval.connection import URI_ENV

    if uri or os.environ.get(URI_ENV):
        return uri or os.environ[URI_ENV]
    try:
        state = local.read_state()
    except local.ClusterError as e:
        raise click.ClickException(str(e)) from None
    return state.milvus_uri if state else ""
