"""The web UI as its own Serve application (``route_prefix: /ui`` in the Serve configs).

Why not a route of the Gateway: Gradio keeps each browser session's event queue in the
process that serves it (``queue/join`` and the ``queue/data`` stream are two requests),
and Serve spreads requests over the Gateway's autoscaled replicas with no session
affinity; a second Gateway replica would break every other session. The UI runs in one
replica of its own and is an ordinary client of the API (same keys, limits and checks).

Config (the application's ``args``)::

    api_url: ""   # the API's base URL from this replica; "" = the Serve proxy the
                  # page came in through, at its root (the API's route_prefix "/")
    samples_dir: ""  # a folder of sample images the Analyze tab offers; "" = upload only
    runs_dir: ""     # evaluation runs for the Reports tab; "" = $MEDRAY_HOME/runs
"""

from __future__ import annotations

from typing import Any

from ray import serve

from medray.serving.settings import UIArgs, parse_ui_args


@serve.deployment(name="WebUI", num_replicas=1, max_ongoing_requests=64)
@serve.ingress()
class WebUI:
    """The Gradio Blocks of :mod:`serve_apps.ui.app` on a FastAPI app of their own."""

    def __init__(self, args: UIArgs) -> None:
        self.args = args

    def __serve_build_asgi_app__(self):
        from fastapi import FastAPI

        from medray import __version__
        from serve_apps.ui.app import mount_ui

        app = FastAPI(title="MedRay web UI", version=__version__, docs_url=None, redoc_url=None)
        mount_ui(
            app,
            path="/",
            api_url=self.args.api_url or None,
            samples_dir=self.args.samples_dir or None,
            runs_dir=self.args.runs_dir or None,
        )
        return app


def ui_builder(args: dict[str, Any] | None = None) -> serve.Application:
    """``import_path: serve_apps.ui.deployment:ui_builder`` in the Serve configs."""
    return WebUI.bind(parse_ui_args(args))
