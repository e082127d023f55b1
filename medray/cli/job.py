"""``medray job submit``: ``ray job submit`` with the working dir, auth and cluster env set."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import click

from medray.paths import repo_root

log = logging.getLogger(__name__)
POLL_S = 5.0


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


def preflight(entrypoint: Sequence[str], working_dir: Path, env: dict[str, str]) -> None:
    """For ``python -m jobs.NAME ARGS``: load the job's config here (``--print-config``)
    so that a wrong key, value or file fails in a second, before anything is uploaded."""
    ep = list(entrypoint)
    if len(ep) < 3 or Path(ep[0]).name not in ("python", "python3") or ep[1] != "-m":
        return
    if not ep[2].startswith("jobs.") or any(a in ("-h", "--help") for a in ep[3:]):
        return
    path = os.pathsep.join(p for p in (str(working_dir), env.get("PYTHONPATH", "")) if p)
    res = subprocess.run(
        [sys.executable, "-m", ep[2], *ep[3:], "--print-config"],
        cwd=working_dir,
        env={**env, "PYTHONPATH": path, "MEDRAY_SOURCE_ROOT": str(Path(working_dir).resolve())},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode != 0:
        raise click.ClickException(
            "the job's configuration is invalid; nothing was submitted:\n"
            + (res.stderr.strip() or res.stdout.strip())[-3000:]
        )


def submit(
    entrypoint: Sequence[str],
    working_dir: Path,
    wait: bool = True,
    env_vars: dict[str, str] | None = None,
    stdout: IO[str] | None = None,
    stuck_timeout_s: float = 300.0,
) -> int:
    """Run ``ray job submit --working-dir DIR -- ENTRYPOINT``; return its exit code.

    ``stdout``: an open file for the job's output (stdout and stderr); default: the terminal.
    While it waits, the job's pending demands are watched (``medray.cluster.pending``):
    a job whose tasks no node can hold, or that ran nothing for ``stuck_timeout_s`` while
    its tasks waited for resources, is stopped with a message naming the resource and
    the fix (exit code 2) instead of waiting forever.
    """
    from medray.cluster import local

    env, address = submit_env_and_address()
    preflight(entrypoint, working_dir, env)
    # MEDRAY_SOURCE_ROOT: relative data paths in configs (../shared/data/...) resolve
    # against the checkout the job came from, not against the uploaded copy.
    runtime_env = {
        "env_vars": {k: env[k] for k in ("MEDRAY_HOME", "MEDRAY_MILVUS_URI") if k in env}
        | {"MEDRAY_SOURCE_ROOT": str(Path(working_dir).resolve())}
        | (env_vars or {}),
    }
    submission_id = f"medray-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    ray_bin = Path(sys.executable).parent / "ray"
    cmd = [
        str(ray_bin) if ray_bin.exists() else "ray",
        "job",
        "submit",
        "--address",
        address,
        "--submission-id",
        submission_id,
        "--working-dir",
        str(working_dir),
        "--runtime-env-json",
        json.dumps(runtime_env),
    ]
    if not wait:
        cmd.append("--no-wait")
    cmd += ["--", *entrypoint]
    out = {} if stdout is None else {"stdout": stdout, "stderr": subprocess.STDOUT}
    if not wait:
        return subprocess.call(cmd, env=env, **out)
    proc = subprocess.Popen(cmd, env=env, **out)
    on_local = local.read_state() is not None
    from medray.cluster.pending import Dashboard, DashboardError, ray_token

    dashboard = Dashboard(address, ray_token())
    verdict = _watch(proc, dashboard, submission_id, stuck_timeout_s, on_local)
    if verdict is None:
        return proc.returncode

    def say(line: str) -> None:
        click.echo(line, err=True)
        if stdout is not None:
            stdout.write(line + "\n")
            stdout.flush()

    # The reason goes first: the lines Ray prints about the driver's SIGTERM follow it.
    say(f"\nmedray: stopping job {submission_id}: {verdict.message}")
    try:
        dashboard.stop_job(submission_id)
    except DashboardError as e:
        log.warning("%s; stop it with `ray job stop %s`", e, submission_id)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
    say(f"medray: stopped job {submission_id} (exit code 2; the reason is above)")
    return 2


def _watch(proc: subprocess.Popen, dashboard, submission_id: str, stuck_s: float, local: bool):
    """Wait for ``proc``; return a ``pending.Verdict`` once the job must be stopped, or
    None when it ended by itself."""
    from medray.cluster.pending import DashboardError, JobWatch

    watch = JobWatch(dashboard, submission_id, stuck_s, unschedulable_final=local)
    while True:
        try:
            proc.wait(timeout=POLL_S)
            return None
        except subprocess.TimeoutExpired:
            pass
        try:
            verdict = watch.poll()
        except (DashboardError, KeyError, ValueError) as e:
            log.debug("could not read the job's pending demands: %s", e)
            continue
        if verdict is not None:
            return verdict


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
@click.option("--no-wait", is_flag=True, help="Return once the job is submitted (no watching).")
@click.option(
    "--stuck-timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Stop the job when its tasks waited this many seconds for resources while it ran "
    "nothing (0: wait forever). Tasks no node can hold stop it at once.",
)
@click.option(
    "--env", "env_items", multiple=True, metavar="KEY=VALUE", help="Extra environment for the job."
)
@click.argument("entrypoint", nargs=-1, required=True, type=click.UNPROCESSED)
def submit_cmd(
    working_dir: Path,
    no_wait: bool,
    stuck_timeout: float,
    env_items: tuple[str, ...],
    entrypoint: tuple[str, ...],
) -> None:
    """Submit ENTRYPOINT, e.g. `medray job submit -- python -m jobs.pipeline`.

    The working dir is uploaded to every node (files ignored by .gitignore are left out),
    so `medray` and `jobs` import there; token auth and the Milvus URI are passed along.
    A job that waits for resources no node has (or none frees) is stopped with the
    reason and the fix (exit code 2).
    """
    extra = {}
    for item in env_items:
        k, sep, v = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
        extra[k] = v
    if stuck_timeout < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--stuck-timeout")
    sys.exit(
        submit(
            entrypoint,
            working_dir,
            wait=not no_wait,
            env_vars=extra,
            stuck_timeout_s=stuck_timeout,
        )
    )


submit_cmd.name = "submit"
