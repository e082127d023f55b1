"""Shared fixtures: an isolated MEDRAY_HOME, tiny models, one local multi-node cluster.

The whole test run shares one local cluster (3 Ray nodes + Milvus Lite, started with
MedRay's own ``medray.cluster.local``) on ports no default install uses, and one
``ray.init`` connection to it. Tests that start clusters of their own run before it
starts (see ``pytest_collection_modifyitems``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Isolate every test run from the user's ~/.medray and from any hub access, before
# anything imports MedRay or Hugging Face libraries.
_HOME = Path(tempfile.mkdtemp(prefix="medray-test-home-"))
os.environ["MEDRAY_HOME"] = str(_HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The test clusters use Ray token auth; Ray reads the mode once, when it is first
# imported, so it must be set before any test module imports ray.
os.environ["RAY_AUTH_MODE"] = "token"

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Ports of the shared test cluster: outside Ray's worker range and away from defaults.
# MEDRAY_TEST_PORT_OFFSET shifts every port a test run uses, so that several checkouts
# can run their test suites on one machine at once; use multiples of 100 (0-500, so
# that no port reaches Ray's worker range 20000-29999).
PORT_OFFSET = int(os.environ.get("MEDRAY_TEST_PORT_OFFSET", "0"))
TEST_PORTS = {
    "ray_port": 6479 + PORT_OFFSET,
    "dashboard_port": 8365 + PORT_OFFSET,
    "client_port": 10201 + PORT_OFFSET,
    "milvus_port": 18631 + PORT_OFFSET,
}

_CLUSTER_FIXTURES = {"local_cluster", "ray_cluster", "milvus_uri"}


def pytest_sessionfinish(session, exitstatus):
    """Remove this run's MEDRAY_HOME (models, runs, Milvus data) once every fixture is done."""
    import shutil

    shutil.rmtree(_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` tests without CUDA; run tests that start their own clusters before
    the shared cluster exists (two clusters at once are heavy on two cores), and the tests
    of the shared Serve app (``served_app``, tests/integration/conftest.py) after every
    other cluster test, so that the app stays up only while they run and meets no other
    deploy."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)

    def order(item) -> tuple[bool, bool]:
        names = set(getattr(item, "fixturenames", ()))
        return bool(_CLUSTER_FIXTURES & names), "served_app" in names

    items.sort(key=order)


@pytest.fixture(scope="session")
def medray_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample data beside the repo (../shared/data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real sample data not found at {SHARED_DATA}; clone the repo beside shared/")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, str]:
    """Every tiny preset built once (cached in MEDRAY_HOME): name -> folder."""
    from medray.models import PRESETS, ensure_built

    return {name: str(ensure_built(p)) for name, p in PRESETS.items() if p.source == "tiny"}


@pytest.fixture(scope="session")
def local_cluster():
    """The shared 3-node cluster + Milvus Lite, stopped (and checked stopped) at the end."""
    from medray.cluster import local

    cfg = local.LocalClusterConfig(nodes=3, cpus_per_node=1, **TEST_PORTS)
    state, _ = local.up(cfg)
    os.environ.update(local.client_env(state))
    try:
        yield state
    finally:
        pids = local.recorded_pids(state)
        local.down()
        from medray.cluster.procs import alive

        left = [p for p in pids if alive(p)]
        assert not left, f"processes of the test cluster survived `down`: {left}"


@pytest.fixture(scope="session")
def ray_cluster(local_cluster):
    """This test process connected to the shared cluster (one ``ray.init`` per run)."""
    import ray

    ray.init(address=local_cluster.ray_address, log_to_driver=False)
    yield local_cluster
    ray.shutdown()


@pytest.fixture(scope="session")
def milvus_uri(local_cluster) -> str:
    return local_cluster.milvus_uri


@pytest.fixture(scope="session")
def json_adapter(tiny_models, tmp_path_factory) -> str:
    """The LoRA adapter that makes the tiny VLM write one structured answer
    (``served_app.train_json_adapter``), trained once for every served-app module."""
    from served_app import train_json_adapter

    return train_json_adapter(tmp_path_factory.mktemp("json-adapter") / "lora-json")
