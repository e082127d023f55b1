"""Deploy, inspect and remove the MedRay Serve app through Ray's dashboard REST API.

What ``serve deploy`` does, plus what a local cluster needs: the repo is uploaded as the
app's ``working_dir`` (so every node runs this checkout's code), ``key=value`` overrides
of the app ``args`` are validated before anything is sent, and ``deploy`` can wait until
the app runs. Used by ``medray serve up|down``, the demo, the tests and the benchmark.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medray.config import ConfigError, load_yaml, merge, parse_overrides
from medray.paths import repo_root

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "serve_apps/configs/local.yaml"
UI_IMPORT_PATH = "serve_apps.ui.deployment:ui_builder"
# The web UI app of app NAME is NAME-ui (its own app: serve_apps/ui/deployment.py).
UI_SUFFIX = "-ui"


def ui_apps(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The web UI applications of a Serve config (those after the first with the UI's
    import path)."""
    return [a for a in config["applications"][1:] if a.get("import_path") == UI_IMPORT_PATH]


class ServeDeployError(RuntimeError):
    """Deploying or removing the app failed; the message says why and what to do."""


def load_serve_config(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    host: str | None = None,
    port: int | None = None,
    app_name: str | None = None,
) -> dict[str, Any]:
    """Read a Serve config file and apply dotted ``key=value`` overrides to the first
    application's ``args`` (validated with ``AppArgs``), plus host/port overrides.
    ``app_name`` renames the first application and its web UI application (``NAME-ui``).

    ``auth.listen_host`` is set from ``http_options.host`` (what Serve binds; Serve's
    default 127.0.0.1), so API-key enforcement follows it; a config that declares another
    ``auth.listen_host`` is refused. The Gateway also judges each request by the address
    it really came in on (``AuthSettings.required_for``).

    Raises:
        ConfigError: the file, an override or the resulting args are invalid.
    """
    from ray.serve.schema import ServeDeploySchema

    from medray.serving.settings import parse_args, parse_ui_args

    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = repo_root() / p
    config = copy.deepcopy(load_yaml(p))
    apps = config.get("applications") or []
    if not apps:
        raise ConfigError(f"{p}: no applications")
    app = apps[0]
    args = merge(app.get("args") or {}, parse_overrides(overrides))
    if host is not None:
        config.setdefault("http_options", {})["host"] = host
    bind = str((config.get("http_options") or {}).get("host", "127.0.0.1"))
    declared = (args.get("auth") or {}).get("listen_host") if host is None else None
    if declared is not None and str(declared) != bind:
        raise ConfigError(
            f"auth.listen_host is {declared!r} but Serve binds http_options.host={bind!r}: "
            "keys are required by the address Serve really binds; set the host once "
            "(http_options.host, or --host)"
        )
    args = merge(args, {"auth": {"listen_host": bind}})
    if port is not None:
        config.setdefault("http_options", {})["port"] = int(port)
    for ui in ui_apps(config):
        if app_name:
            ui["name"] = app_name + UI_SUFFIX
        parse_ui_args(ui.get("args"))  # like the API's args: fail here, not in a replica
    if app_name:
        app["name"] = app_name
    parsed = parse_args(args)  # fail here, with the key's name, not in a replica
    app["args"] = args
    # Deployments the args leave out of the graph must leave the config too: Serve refuses
    # options for a deployment the app does not have.
    absent = {"Retriever"} if not parsed.retrieval.enabled else set()
    absent |= {"Agent"} if not parsed.agent.enabled else set()
    if absent and app.get("deployments"):
        app["deployments"] = [d for d in app["deployments"] if d.get("name") not in absent]
    try:
        ServeDeploySchema.model_validate(config)
    except Exception as e:
        raise ConfigError(f"{p}: not a valid Serve config: {e}") from None
    return config


def endpoint_urls(config: Mapping[str, Any]) -> dict[str, str]:
    """The HTTP endpoints of the first application, as a client would call them."""
    http = config.get("http_options") or {}
    host = http.get("host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    prefix = (config["applications"][0].get("route_prefix") or "/").rstrip("/")
    origin = f"http://{host}:{http.get('port', 8000)}"
    base = f"{origin}{prefix}"
    urls = {
        "analyze (SSE)": f"{base}/v1/analyze",
        "search": f"{base}/v1/search",
        "chat (OpenAI)": f"{base}/v1/chat/completions",
        "models": f"{base}/v1/models",
        "generate": f"{base}/generate",
        "health": f"{base}/health",
        "ready": f"{base}/ready",
        "OpenAPI docs": f"{base}/docs",
    }
    for ui in ui_apps(config):
        urls["web UI"] = f"{origin}{(ui.get('route_prefix') or '/ui').rstrip('/')}/"
    return urls


def _auth_headers() -> dict[str, str]:
    """Ray's token as a header, if this machine has one.

    Passed explicitly: Ray reads ``RAY_AUTH_MODE`` once, when it is first imported,
    which in a CLI process may be before the cluster's environment is known.
    """
    import os

    from medray.cluster.state import auth_token_path

    token = os.environ.get("RAY_AUTH_TOKEN", "")
    path = auth_token_path()
    if not token and path.is_file():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _client(dashboard_url: str):
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    try:
        return ServeSubmissionClient(dashboard_url, headers=_auth_headers())
    except Exception as e:
        raise ServeDeployError(
            f"cannot reach the Ray dashboard at {dashboard_url} ({type(e).__name__}: {e}); "
            "is the cluster up (`medray cluster up`)?"
        ) from None


def deploy(
    config: Mapping[str, Any],
    dashboard_url: str,
    *,
    working_dir: str | Path | None = None,
    wait_s: float = 0.0,
) -> dict[str, Any]:
    """Send ``config`` to the cluster (declarative: it replaces the cluster's Serve apps).

    Args:
        config: a Serve config (``load_serve_config``).
        dashboard_url: e.g. ``http://127.0.0.1:8265``.
        working_dir: local folder uploaded as every app's ``runtime_env.working_dir``
            (default: this repo); pass "" to send the config as it is.
        wait_s: wait up to this long for every app to be RUNNING (0: do not wait).

    Returns:
        The first app's status details (after waiting) or ``{}``.
    """
    cfg = copy.deepcopy(dict(config))
    client = _client(dashboard_url)
    wd = repo_root() if working_dir is None else working_dir
    if wd:
        for app in cfg["applications"]:
            env = dict(app.get("runtime_env") or {})
            env["working_dir"] = str(wd)
            client._upload_working_dir_if_needed(env)
            app["runtime_env"] = env
    try:
        client.deploy_applications(cfg)
    except Exception as e:
        raise ServeDeployError(f"deploy request failed: {e}") from None
    if wait_s <= 0:
        return {}
    deadline = time.monotonic() + wait_s
    names = [a["name"] for a in cfg["applications"]]
    first = wait_running(dashboard_url, names[0], wait_s)
    for name in names[1:]:
        wait_running(dashboard_url, name, max(1.0, deadline - time.monotonic()))
    return first


def app_details(dashboard_url: str, name: str) -> dict[str, Any] | None:
    """Serve's details of app ``name`` (status, deployments, replicas), or None."""
    details = _client(dashboard_url).get_serve_details()
    return (details.get("applications") or {}).get(name)


def replica_counts(dashboard_url: str, name: str) -> dict[str, int]:
    """Running replicas per deployment of app ``name``."""
    app = app_details(dashboard_url, name) or {}
    return {
        dep: sum(1 for r in info.get("replicas", []) if r.get("state") == "RUNNING")
        for dep, info in (app.get("deployments") or {}).items()
    }


def wait_running(dashboard_url: str, name: str, timeout_s: float) -> dict[str, Any]:
    """Wait until app ``name`` is RUNNING.

    Raises:
        ServeDeployError: it failed to deploy (with Serve's message) or timed out.
    """
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = app_details(dashboard_url, name) or {}
        except Exception as e:  # the controller may still be starting
            log.debug("serve details not available yet: %s", e)
        status = last.get("status")
        if status == "RUNNING":
            return last
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise ServeDeployError(f"app {name!r} {status}: {_failure(last)}")
        time.sleep(1.0)
    raise ServeDeployError(
        f"app {name!r} not running after {timeout_s:.0f}s (status {last.get('status')!r}): "
        f"{_failure(last)}"
    )


def _failure(app: Mapping[str, Any]) -> str:
    msgs = [app.get("message") or ""]
    for dep, info in (app.get("deployments") or {}).items():
        if info.get("status") not in (None, "HEALTHY") and info.get("message"):
            msgs.append(f"{dep}: {info['message']}")
    text = " | ".join(m for m in msgs if m)
    return text[-3000:] or "no message from Serve"


def remove(dashboard_url: str, name: str) -> bool:
    """Remove app ``name`` and its web UI app ``NAME-ui`` (and shut Serve down if no app
    is left); True if ``name`` existed."""
    client = _client(dashboard_url)
    try:
        details = client.get_serve_details()
    except Exception as e:
        raise ServeDeployError(f"cannot read Serve's state: {e}") from None
    apps = details.get("applications") or {}
    if name not in apps:
        return False
    others = {k: v for k, v in apps.items() if k not in (name, name + UI_SUFFIX)}
    if not others:
        client.delete_applications()
    else:
        configs = [
            v["deployed_app_config"] for v in others.values() if v.get("deployed_app_config")
        ]
        client.deploy_applications({"applications": configs})
    return True
