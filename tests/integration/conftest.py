"""The Serve app the served-app tests share: deployed once per test session.

test_job_coexist.py, test_serve_*.py and test_ui_browser.py drive one app deployed from
``serve_apps/configs/local.yaml`` (``served_app.app_config``) instead of one each:
every deploy costs 1.5-2 minutes of the 2-core CI budget. The tests that use it run after
every other cluster test (``pytest_collection_modifyitems`` in tests/conftest.py), so no
other test's app or job meets it, and it is removed when the session ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest


@dataclass(frozen=True)
class ServedApp:
    dashboard: str
    base: str
    # GET /health the moment the deploy reported RUNNING (before any request warmed it).
    health_at_running: dict[str, Any]


@pytest.fixture(scope="session")
def served_app(ray_cluster, tiny_models, milvus_uri, json_adapter, tmp_path_factory):
    from served_app import BASE, app_config, in_subprocess

    from medray.serving.deploy import deploy, remove

    in_subprocess(f"index_collections({milvus_uri!r})")
    config = app_config(tmp_path_factory.mktemp("served-app"), milvus_uri, json_adapter)
    dashboard = ray_cluster.dashboard_url
    t0 = time.perf_counter()
    deploy(config, dashboard, wait_s=420)
    health = httpx.get(f"{BASE}/health", timeout=30).json()
    print(f"serve app (API + UI) RUNNING after {time.perf_counter() - t0:.0f}s")
    try:
        yield ServedApp(dashboard, BASE, health)
    finally:
        remove(dashboard, "medray")


@pytest.fixture(scope="module")
def served(served_app) -> str:
    """The dashboard URL of the session's test app."""
    return served_app.dashboard


@pytest.fixture(scope="module")
def client(served):
    """An HTTP client of the session's app with a valid API key."""
    from served_app import AUTH, BASE

    with httpx.Client(base_url=BASE, headers=AUTH, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def oai(served):
    """The official ``openai`` client pointed at the session's app."""
    from openai import OpenAI
    from served_app import BASE, KEY

    return OpenAI(base_url=f"{BASE}/v1", api_key=KEY, timeout=120, max_retries=0)
