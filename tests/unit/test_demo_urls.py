"""The URLs ``medray demo`` prints for the app its pipeline deployed (no Ray)."""

from __future__ import annotations

import pytest
import yaml

from medray.cli.demo import served_urls
from medray.serving.deploy import load_serve_config

pytestmark = pytest.mark.unit


def test_demo_urls_include_the_web_ui(tmp_path):
    """From the config the serve stage writes (serve/serve_config.yaml): the API's
    endpoints and the web UI at its own route, on the port the stage deployed to."""
    config = load_serve_config("serve_apps/configs/local.yaml", [], port=8123)
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    urls = served_urls({"config": str(path), "url": "http://127.0.0.1:8123"})
    assert urls["web UI"] == "http://127.0.0.1:8123/ui/"
    assert urls["analyze (SSE)"] == "http://127.0.0.1:8123/v1/analyze"
