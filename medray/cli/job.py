"""``medray job submit``: ``ray job submit`` with the working dir, auth and cluster env set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import click

from medray.paths import repo_root


def submit_env_and_address() -> tuple[dict[str, str], str]:
    """Client environment and job-API address: the local cluster, else ``RAY_API_SERVER_ADDRESS``."""
    from medray.cluster import local

    state = local.read_state()
    if state is not None:
        env = {**os.environ, **local.client_env(state)}
        return env, state.dashboard_url
    address = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS", "")
    if not address.startswith("http"):
        raise click.ClickException(
            "no cluster to submit to: start one with `medray cluster up`, or set "
            "RAY_API_SERVER_ADDRESS=http://<head>:8265 (and RAY_AUTH_MODE=token) for a remote cluster"
        )
    return {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}, address


def submit(
    entrypoint: Sequence[str],
    working_dir: Path,
    wait: bool = True,
    env_vars: dict[str, str] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Run ``ray job submit --working-dir DIR -- ENTRYPOINT``; return its exit code.

    ``stdout``: an open file for the job's output (stdout and stderr); default: the terminal.
    """
    env, address = submit_env_and_address()
    # MEDRAY_SOURCE_ROOT: relative data paths in configs (../shared/data/...) resolve
    # against the checkout the job came from, not against the uploaded copy.
    runtime_env = {
        "env_vars": {k: env[k] for k in ("MEDRAY_HOME", "MEDRAY_MILVUS_URI") if k in env}
        | {"MEDRAY_SOURCE_ROOT": str(Path(working_dir).resolve())}
        | (env_vars or {}),
    }
    ray_bin = Path(sys.executable).parent / "ray"
    cmd = [
        str(ray_bin) if ray_bin.exists() else "ray",
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(working_dir),
        "--runtime-env-json",
        json.dumps(runtime_env),
    ]
    if not wait:
        cmd.append("--no-wait")
    cmd += ["--", *entrypoint]
    if stdout is None:
        return subprocess.call(cmd, env=env)
    return subprocess.call(cmd, env=env, stdout=stdout, stderr=subprocess.STDOUT)


@click.group()
def job() -> None:
    """Submit MedRay jobs to the running cluster."""


@job.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--working-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=repo_root(),
    show_default=True,
    help="Folder shipped to every node (must hold medray/ and jobs/).",
)
@click.option("--no-wait", is_flag=True, help="Return once the job is submitted.")
@click.option(
    "--env", "env_items", multiple=True, metavar="KEY=VALUE", help="Extra environment for the job."
)
@click.argument("entrypoint", nargs=-1, required=True, type=click.UNPROCESSED)
def submit_cmd(
    working_dir: Path, no_wait: bool, env_items: tuple[str, ...], entrypoint: tuple[str, ...]
) -> None:
    """Submit ENTRYPOINT, e.g. `medray job submit -- python -m jobs.pipeline`.

    The working dir is uploaded to every node (files ignored by .gitignore are left out),
    so `medray` and `jobs` import there; token auth and the Milvus URI are passed along.
    """
    extra = {}
    for item in env_items:
        k, sep, v = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
        extra[k] = v
    sys.exit(submit(entrypoint, working_dir, wait=not no_wait, env_vars=extra))


submit_cmd.name = "submit"
