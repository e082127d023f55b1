"""Milvus retrieval against a running Milvus Lite server: stores, the index job, searches."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from infer_fixtures import write_output
from PIL import Image, ImageDraw

from medray.config import from_dict, replace
from medray.paths import repo_root
from medray.retrieval import CaseStore, KnowledgeStore, MilvusSettings, RetrievalError, load_corpus
from medray.retrieval.search import Searcher

pytestmark = pytest.mark.integration

LABELS = ["pleural effusion", "cardiomegaly", "pneumothorax", "no finding"]


def _image(i: int) -> bytes:
    """A distinct little picture per row (position and size of a bright disc)."""
    rng = np.random.default_rng(i)
    img = Image.new("L", (96, 96), 20)
    d = ImageDraw.Draw(img)
    x, y, r = (int(v) for v in rng.integers(10, 80, 3) // [1, 1, 4])
    d.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(120, 255)))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_cases(path: Path, n: int, corrupt: int | None = None) -> pd.DataFrame:
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        rows.append(
            {
                "sample_id": f"case-{i:04d}",
                "original_id": str(i),
                "image": _image(i) if i != corrupt else b"\xff\xd8\xff\xe0 not really a jpeg",
                "findings": f"There is {label} on the {'left' if i % 2 else 'right'}.",
                "impression": label.capitalize() + ".",
                "labels": [label] if label != "no finding" else [],
                "modality": "X-Ray" if i % 3 else "CT",
                "organ": "chest",
                "split": "test" if i % 5 == 0 else "train",
                "source": "test-fixture",
                "study_id": f"s{i:04d}",
                "task": "report",
            }
        )
    rows.append(
        {**rows[0], "sample_id": "vqa-0", "task": "vqa"}
    )  # not a case: filtered out by task
    write_output(path, rows)  # a committed preprocessed output, as the index job requires
    return pd.DataFrame(rows)


def settings(uri: str, suffix: str) -> MilvusSettings:
    return MilvusSettings(
        uri=uri, cases_collection=f"cases_{suffix}", knowledge_collection=f"knowledge_{suffix}"
    )


def test_case_store_upserts_filters_and_errors(milvus_uri):
    s = settings(milvus_uri, "store")
    store = CaseStore(s)
    store.create(8, {"clip_model": "test"}, drop_existing=True)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(40, 8))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [
        {"sample_id": f"s{i}", "image_vec": v.tolist(), "text_vec": v[::-1].tolist(), "report": f"r{i}",
         "labels": ["effusion"] if i % 2 else [], "modality": "CT" if i % 4 == 0 else "X-Ray", "organ": "chest",
         "split": "train", "source": "t", "study_id": f"st{i}"}
        for i, v in enumerate(vecs)
    ]  # fmt: skip
    assert store.upsert(rows) == 40
    store.upsert(rows[:10])  # re-upsert: replaced, not duplicated
    store.flush()
    assert store.count() == 40
    hits = store.search(vecs[7].tolist(), "image", k=3)
    assert hits[0].id == "s7" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].payload["report"] == "r7" and hits[0].payload["labels"] == ["effusion"]
    filtered = store.search(
        vecs[7].tolist(), "image", k=10, filters={"labels": ["effusion"], "modality": "X-Ray"}
    )
    assert filtered and all(
        "effusion" in h.payload["labels"] and h.payload["modality"] == "X-Ray" for h in filtered
    )
    with pytest.raises(RetrievalError, match="has 3 dimensions, the collection expects 8"):
        store.search([0.1, 0.2, 0.3])
    with pytest.raises(RetrievalError, match="empty query vector"):
        store.search([])
    with pytest.raises(RetrievalError, match="holds 8-d vectors, not 16-d"):
        store.create(16, {"clip_model": "test"})
    missing = CaseStore(settings(milvus_uri, "never_created"))
    with pytest.raises(RetrievalError, match="does not exist.*index job"):
        missing.search([0.0] * 8)


def test_knowledge_hybrid_search_finds_the_right_topic(milvus_uri):
    from medray.models.encoders import TextEncoder

    s = settings(milvus_uri, "kb")
    store = KnowledgeStore(s)
    encoder = TextEncoder("minilm-l6")
    store.create(encoder.dim, {"text_model": "minilm-l6"}, drop_existing=True)
    chunks = load_corpus(repo_root() / "datasets" / "knowledge")
    dense = encoder.encode([c.text for c in chunks])
    store.upsert([{**c.to_row(), "dense": v.tolist()} for c, v in zip(chunks, dense, strict=True)])
    store.flush()
    assert store.count() == len(chunks)
    q = "blunting of the costophrenic angle by fluid"
    hits = store.hybrid_search(q, encoder.encode([q])[0].tolist(), k=3)
    assert hits[0].payload["topic"] == "pleural-effusion"
    assert hits[0].payload["references"] and hits[0].payload["title"] == "Pleural effusion"
    assert store.keyword_search("Kerley B lines", k=1)[0].payload["topic"] == "pulmonary-edema"
    with pytest.raises(RetrievalError, match="empty query"):
        store.hybrid_search("   ", [0.0] * encoder.dim)


def _embed(text: str) -> list[float]:
    from medray.models.encoders import TextEncoder

    return TextEncoder("minilm-l6").encode([text])[0].tolist()


def test_index_job_indexes_once_searches_and_reports_bad_rows(
    ray_cluster, milvus_uri, tmp_path, tiny_models
):
    import jobs.index as index_job

    n = 24
    df = write_cases(tmp_path / "cases", n, corrupt=5)
    cfg = from_dict(
        index_job.IndexConfig,
        {
            "run": {"name": "index-test", "storage_path": str(tmp_path / "runs")},
            "milvus": {
                "uri": milvus_uri,
                "cases_collection": "cases_job",
                "knowledge_collection": "knowledge_job",
            },
            "cases": {
                "input": str(tmp_path / "cases"),
                "clip_model": "tiny-clip",
                "drop_existing": True,
                "batch_size": 8,
            },
            "knowledge": {"drop_existing": True},
        },
    )
    first = index_job.main(cfg)
    c = first["cases"]
    assert c["rows_in"] == n  # the vqa row is not a case
    assert c["rows_indexed"] == n - 1 and c["error_count"] == 1
    assert c["errors"][0]["sample_id"] == "case-0005" and "image" in c["errors"][0]["error"]
    assert c["collection_rows"] == n - 1
    assert first["knowledge"]["collection_rows"] == first["knowledge"]["chunks"] > 30
    assert first["knowledge"]["embedded_by"] == "driver"  # a small corpus
    kb = KnowledgeStore(cfg.milvus)
    q_vec = _embed("air in the pleural space")
    before = [(h.id, round(h.score, 4)) for h in kb.dense_search(q_vec, k=5)]

    # Again, the knowledge through the Ray Data actor pool a large corpus takes.
    overrides = ["cases.drop_existing=false", "knowledge.drop_existing=false"]
    again = index_job.main(replace(cfg, [*overrides, "knowledge.driver_max_chunks=0"]))
    assert again["cases"]["collection_rows"] == n - 1  # upserted by sample_id: no duplicates
    assert again["knowledge"]["collection_rows"] == first["knowledge"]["collection_rows"]
    assert again["knowledge"]["embedded_by"] == "1 Ray Data actor(s)"
    # Both paths embed alike: the upserted vectors give the same neighbours and scores.
    assert [(h.id, round(h.score, 4)) for h in kb.dense_search(q_vec, k=5)] == before

    searcher = Searcher(cfg.milvus)
    image0 = df.loc[df.sample_id == "case-0003", "image"].item()
    assert searcher.image_to_image(image0, k=1)[0].id == "case-0003"
    assert len(searcher.text_to_image("pleural effusion", k=4)) == 4
    assert len(searcher.image_to_text(image0, k=2, filters={"split": "train"})) == 2
    assert (
        searcher.search_knowledge("air in the pleural space", k=1)[0].payload["topic"]
        == "pneumothorax"
    )
    with pytest.raises(RetrievalError, match="query image: not an image"):
        searcher.image_to_image(b"GIF89a-but-not-really")
    with pytest.raises(RetrievalError, match="empty query"):
        searcher.text_to_image("")

    # The same searches from the command line: in this process through click's runner
    # (a subprocess each cost ~10 s of imports on 2 cores), and once in a real process,
    # which shows that a search prints its results only (no library INFO logs).
    from click.testing import CliRunner

    from medray.cli.main import cli

    common = ["--milvus-uri", milvus_uri, "--cases", "cases_job", "--knowledge", "knowledge_job"]

    def medray_search(*args: str):
        return CliRunner().invoke(cli, ["search", *common, *args])

    res = medray_search("--json", "knowledge", "air in the pleural space", "-k", "2")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["topic"] == "pneumothorax"
    (tmp_path / "q.jpg").write_bytes(image0)
    res = medray_search("image", str(tmp_path / "q.jpg"), "-k", "1")
    assert res.exit_code == 0 and "case-0003" in res.stdout, res.output
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    res = medray_search("image", str(tmp_path / "bad.jpg"))
    assert res.exit_code == 1 and "query image: not an image" in res.stderr, res.output
    # A bad filter is a usage error (exit 2) that lists the filterable fields.
    res = medray_search("text", "effusion", "--filter", "patient=1")
    assert res.exit_code == 2 and "cannot filter on 'patient'" in res.stderr, res.output
    assert "filterable fields: modality" in res.stderr
    # `search filters` lists the values a filter can match, as a table or JSON.
    res = medray_search("filters")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["field", "values"] and set(lines[1]) <= {"-", " "}
    rows = {line.split()[0]: line for line in lines[2:] if line.strip()}
    assert "CT, X-Ray" in rows["modality"] and "pleural effusion" in rows["labels"]
    res = medray_search("filters", "--json")
    values = json.loads(res.stdout)
    assert values["modality"] == ["CT", "X-Ray"] and values["split"] == ["test", "train"]

    # Filters ignore case and match words of the stored values, options may follow the
    # subcommand, and nothing but the results is printed.
    res = subprocess.run(
        [sys.executable, "-m", "medray.cli.main", "search", *common, "text", "effusion",
         "--filter", "labels=EFFUSION", "--filter", "modality=x-ray", "-k", "3", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)
    assert hits and all(
        h["labels"] == ["pleural effusion"] and h["modality"] == "X-Ray" for h in hits
    )
    assert "INFO" not in res.stderr, res.stderr


def test_milvus_down_gives_a_clear_error():
    with pytest.raises(
        RetrievalError, match="cannot reach Milvus at http://127.0.0.1:1.*medray cluster up"
    ):
        CaseStore(MilvusSettings(uri="http://127.0.0.1:1", timeout_s=2))


def test_vectors_survive_a_milvus_restart(tmp_path):
    port = 18690 + int(os.environ.get("MEDRAY_TEST_PORT_OFFSET", "0"))
    data = tmp_path / "milvus"
    cmd = [
        str(Path(sys.executable).parent / "milvus-lite"),
        "server",
        "--data-dir",
        str(data),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]

    def start():
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from medray.cluster.milvus_server import milvus_check

        assert milvus_check(f"http://127.0.0.1:{port}", timeout=30) is None
        return proc

    s = MilvusSettings(uri=f"http://127.0.0.1:{port}", cases_collection="persist")
    proc = start()
    try:
        store = CaseStore(s)
        store.create(4, {"clip_model": "test"})
        rows = [{"sample_id": f"p{i}", "image_vec": [1.0, i, 0.0, 0.5], "text_vec": [0.0, 1.0, i, 0.5], "report": "",
                 "labels": [], "modality": "", "organ": "", "split": "", "source": "", "study_id": ""} for i in range(25)]  # fmt: skip
        store.upsert(rows)
        store.flush()
        before = store.search([1.0, 3.0, 0.0, 0.5], k=1)[0].id
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    time.sleep(0.5)
    proc = start()
    try:
        store = CaseStore(s)
        assert store.count() == 25
        assert store.search([1.0, 3.0, 0.0, 0.5], k=1)[0].id == before == "p3"
        assert store.metadata()["dim"] == 4
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_retriever_batches_searches_and_keeps_failures_per_request(milvus_uri):
    """``*_many`` (what the Serve Retriever's ``@serve.batch`` calls): one Milvus search
    per group gives the same hits as one search per request, a bad request fails alone,
    and cached collection checks do not hide a collection dropped meanwhile."""
    from medray.serving.retriever import RetrievalUnavailable, Retriever

    s = settings(milvus_uri, "batched")
    cases = CaseStore(s)
    cases.create(8, {"clip_model": "clip-x"}, drop_existing=True)
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(12, 8))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cases.upsert(
        [
            {"sample_id": f"b{i}", "image_vec": v.tolist(), "text_vec": v[::-1].tolist(),
             "report": f"r{i}", "labels": [], "modality": "X-Ray", "organ": "chest",
             "split": "test", "source": "t", "study_id": f"st{i}"}
            for i, v in enumerate(vecs)
        ]
    )  # fmt: skip
    cases.flush()
    kb = KnowledgeStore(s)
    kb.create(8, {"text_model": "text-x"}, drop_existing=True)
    texts = ["pleural effusion blunts the costophrenic angle", "pneumothorax shows a pleural line",
             "cardiomegaly enlarges the cardiac silhouette"]  # fmt: skip
    kb.upsert(
        [
            {"chunk_id": f"c{i}", "text": t, "dense": vecs[i].tolist(), "title": t[:10],
             "heading": "", "source": "t", "topic": f"t{i}", "references": ""}
            for i, t in enumerate(texts)
        ]
    )  # fmt: skip
    kb.flush()
    r = Retriever(s, clip_model="clip-x", text_model="text-x", meta_ttl_s=60)

    reqs = [(vecs[3], "image", 3, None), (vecs[5], "text", 2, None), (vecs[7], "image", 3, None),
            (vecs[1], "image", 3, {"colour": "red"}), (vecs[2], "sideways", 3, None)]  # fmt: skip
    out = r.similar_cases_many(reqs)
    for (v, field, k, filters), got in zip(reqs[:3], out[:3], strict=True):
        assert got == r.similar_cases(v, field, k, filters)
    assert out[0][0]["id"] == "b3" and len(out[1]) == 2 and out[2][0]["id"] == "b7"
    assert isinstance(out[3], RetrievalUnavailable) and "cannot filter on 'colour'" in str(out[3])
    assert isinstance(out[4], RetrievalUnavailable) and "'sideways'" in str(out[4])

    kreqs = [("costophrenic angle effusion", vecs[0], 2), ("   ", vecs[1], 2),
             ("pleural line pneumothorax", vecs[1], 2)]  # fmt: skip
    kout = r.knowledge_many(kreqs)
    assert kout[0] == r.knowledge(*kreqs[0]) and kout[0][0]["id"] == "c0"
    assert isinstance(kout[1], RetrievalUnavailable) and "empty query" in str(kout[1])
    assert kout[2][0]["id"] == "c1"

    with pytest.raises(RetrievalUnavailable, match="indexed with clip model 'clip-x'"):
        Retriever(s, clip_model="other-clip").similar_cases(vecs[0], "image", 3)

    cases.drop()  # the cached check still says "exists": the search fails and re-checks
    with pytest.raises(RetrievalUnavailable, match="does not exist"):
        r.similar_cases(vecs[0], "image", 3)
    kb.drop()
