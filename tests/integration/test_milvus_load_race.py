"""Issue 25: the index job's warm-up must never load an index file that Milvus Lite's
background builder is still writing.

Milvus Lite indexes a flushed segment of a loaded collection in a background thread and
writes the index file in place. The warm-up used to flush, release and load the
collection: the load then built the same file again, or read it half written
(``faiss::read_index ... read error``), now and then, more often on a busy machine and
with small segments, whose builds are as short as the gap between the two threads. This
test runs that sequence the way the pipeline does, on the session's shared Milvus server,
from several clients at once; with the release + load it failed in most runs on the 2-core
machine (see the closing note of issue 25), with the collection kept loaded it cannot.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytestmark = pytest.mark.integration

DIM = 64
CLIENTS = 3
ROUNDS = 25


def _rows(tag: str, n: int, rng: np.random.Generator) -> list[dict]:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [
        {
            "sample_id": f"{tag}-{i}",
            "image_vec": v[i].tolist(),
            "text_vec": v[(i + 1) % n].tolist(),
            "report": "",
            "labels": [],
            "modality": "",
            "organ": "",
            "split": "",
            "source": "",
            "study_id": "",
        }
        for i in range(n)
    ]


def _index_rounds(uri: str, client_no: int) -> tuple[int, int, bool]:
    """Upsert a small batch and warm, ``ROUNDS`` times; the rows written, the rows the
    collection counts, and whether the last row written is its own nearest neighbour."""
    from medray.retrieval import CaseStore, MilvusSettings

    store = CaseStore(MilvusSettings(uri=uri, cases_collection=f"load_race_{client_no}"))
    store.create(DIM, {"clip_model": "test"}, drop_existing=True)
    rng = np.random.default_rng(client_no)
    written, last = 0, None
    try:
        for r in range(ROUNDS):
            rows = _rows(f"c{client_no}r{r}", int(rng.integers(60, 240)), rng)
            written += store.upsert(rows)
            store.warm()
            last = rows[-1]
        top = store.search(last["image_vec"], field="image", k=1)[0].id
        return written, store.count(), top == last["sample_id"]
    finally:
        store.drop()
        store.client.close()


def test_warm_after_small_flushes_from_several_clients(milvus_uri):
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda c: _index_rounds(milvus_uri, c), range(CLIENTS)))
    for written, counted, found in results:
        assert counted == written  # every upserted row is in the collection
        assert found  # and searchable through its index
