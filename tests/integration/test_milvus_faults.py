"""Milvus faults at the serving layer (issue 18, point 5): a Milvus Lite server this test
starts is killed and started again; searches degrade within 2 s while it is down (no
minutes of pymilvus retries) and come back by themselves once it answers again."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medray.cluster import procs
from medray.retrieval import CaseStore, MilvusSettings
from medray.serving.retriever import RetrievalUnavailable, Retriever

pytestmark = pytest.mark.integration

DIM = 8
DEGRADE_S = 2.0
RECOVER_S = 10.0


def _start(data_dir: Path, port: int) -> subprocess.Popen:
    exe = str(Path(sys.executable).parent / "milvus-lite")
    proc = subprocess.Popen(
        [exe, "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert procs.wait_port("127.0.0.1", port, 120), "milvus-lite did not start"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)  # our own child, by its pid
    proc.wait(30)


def _rows(n: int) -> list[dict]:
    v = np.eye(n, DIM, dtype=np.float32)
    return [
        {
            "sample_id": f"s{i}",
            "image_vec": v[i].tolist(),
            "text_vec": v[i].tolist(),
            "report": f"report {i}",
            "labels": [],
            "modality": "X-Ray",
            "organ": "",
            "split": "test",
            "source": "faults",
            "study_id": "",
        }
        for i in range(n)
    ]


def test_search_degrades_fast_while_milvus_is_down_and_recovers_by_itself(tmp_path):
    port = procs.free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start(tmp_path / "milvus", port)
    try:
        store = CaseStore(MilvusSettings(uri=uri))
        store.create(DIM, {"clip_model": "test"})
        store.upsert(_rows(4))
        store.flush()
        store.client.flush("medray_collections")
        store.client.close()

        # The app's settings: 0.9 s per call, 1 s before a dead server is tried again.
        retriever = Retriever(MilvusSettings(uri=uri), timeout_s=0.9, retry_after_s=1.0)
        query = np.eye(1, DIM, 2)[0].tolist()
        assert retriever.similar_cases(query, k=1)[0]["id"] == "s2"

        _kill(server)
        for _ in range(5):  # the first search finds it dead, the next skip it at once
            t0 = time.monotonic()
            with pytest.raises(RetrievalUnavailable):
                retriever.similar_cases(query, k=1)
            assert time.monotonic() - t0 < DEGRADE_S
        t0 = time.monotonic()
        status = retriever.status()
        assert status["milvus"] != "ok" and time.monotonic() - t0 < DEGRADE_S

        server = _start(tmp_path / "milvus", port)
        back = time.monotonic()
        hits = None
        while hits is None and time.monotonic() - back < RECOVER_S:
            try:
                hits = retriever.similar_cases(query, k=1)
            except RetrievalUnavailable:
                time.sleep(0.2)  # polling until a deadline, not a race: the next try
        assert hits is not None, f"retrieval did not come back within {RECOVER_S} s"
        assert hits[0]["id"] == "s2" and retriever.status()["milvus"] == "ok"
    finally:
        if server.poll() is None:
            _kill(server)


def test_a_hung_milvus_costs_one_timeout_not_minutes(tmp_path):
    """A server that accepts connections and never answers (SIGSTOP): pymilvus would retry
    for minutes without ``timeout=``; with it the search degrades within 2 s."""
    port = procs.free_port()
    server = _start(tmp_path / "milvus", port)
    try:
        retriever = Retriever(
            MilvusSettings(uri=f"http://127.0.0.1:{port}"), timeout_s=0.9, retry_after_s=1.0
        )
        assert retriever.status()["milvus"] == "ok"
        server.send_signal(signal.SIGSTOP)
        for _ in range(3):  # one timeout, then skipped at once for retry_after_s
            t0 = time.monotonic()
            with pytest.raises(RetrievalUnavailable):
                retriever.similar_cases([0.0] * DIM, k=1)
            assert time.monotonic() - t0 < DEGRADE_S
    finally:
        server.send_signal(signal.SIGCONT)
        _kill(server)
