"""Fault handling that needs no server: Milvus call timeouts, deployment health checks."""

from __future__ import annotations

import pytest

from medray.serving.retriever import TimedClient

pytestmark = pytest.mark.unit


class _Client:
    """The shape of pymilvus MilvusClient methods: a ``timeout`` keyword, or none."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float | None]] = []

    def search(self, collection_name, data, limit=10, timeout=None, **kwargs):
        self.calls.append(("search", timeout))
        return []

    def load_collection(self, collection_name, timeout=None, **kwargs):
        self.calls.append(("load_collection", timeout))

    def close(self):
        self.calls.append(("close", None))


def test_every_milvus_call_carries_a_timeout():
    raw = _Client()
    client = TimedClient(raw, 0.9)
    client.search("cases", [[0.0]], limit=1)
    client.search("cases", [[0.0]], timeout=5.0)  # an explicit timeout is kept
    client.load_collection("cases")  # a wait of its own: a longer floor
    client.close()  # takes no timeout
    assert raw.calls == [
        ("search", 0.9),
        ("search", 5.0),
        ("load_collection", 20.0),
        ("close", None),
    ]


def test_every_deployment_defines_check_health():
    import ray.serve

    from serve_apps import app

    deployments = [v for v in vars(app).values() if isinstance(v, ray.serve.Deployment)]
    assert len(deployments) == 8
    for d in deployments:
        assert callable(getattr(d.func_or_class, "check_health", None)), d.name


def test_retriever_health_ignores_a_milvus_outage():
    """A Milvus outage is no replica fault: Serve must not restart the retriever for it."""
    from medray.retrieval import MilvusSettings
    from medray.serving.retriever import Retriever
    from serve_apps.app import RetrieverDeployment

    dep = object.__new__(RetrieverDeployment.func_or_class)
    dep.retriever = Retriever(MilvusSettings(uri="http://127.0.0.1:1"), timeout_s=0.5)
    assert dep.retriever.status()["milvus"] != "ok"
    dep.check_health()  # does not raise


def test_medray_serving_does_not_import_serve_apps():
    """Library code validates a Serve config without importing the Serve app (point 7)."""
    import ast
    from pathlib import Path

    import medray.serving

    for path in Path(medray.serving.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "serve_apps" for n in names), path.name
