"""Retrieval pieces that need no Milvus: filters, corpus chunking, image decoding."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from medray.imaging import ImageDecodeError, decode_image
from medray.paths import repo_root
from medray.retrieval import CorpusError, RetrievalError, build_filter, load_corpus
from medray.retrieval.store import CASE_FILTERS

pytestmark = pytest.mark.unit


def test_filters_are_quoted_and_combined():
    expr = build_filter(
        {"modality": "X-Ray", "labels": ["effusion", "nodule"], "split": ["test", "validation"]},
        CASE_FILTERS,
    )
    assert expr == (
        'modality == "X-Ray" and ARRAY_CONTAINS_ANY(labels, ["effusion", "nodule"]) '
        'and split in ["test", "validation"]'
    )
    assert build_filter(None, CASE_FILTERS) == ""


def test_filter_values_cannot_inject_expressions():
    expr = build_filter({"modality": 'CT" or modality != "'}, CASE_FILTERS)
    assert expr == 'modality == "CT\\" or modality != \\""'


def test_unknown_filter_field_is_refused():
    with pytest.raises(RetrievalError, match="cannot filter on 'patient_id'.*labels, modality"):
        build_filter({"patient_id": "p1"}, CASE_FILTERS)


def test_shipped_corpus_chunks_keep_title_heading_and_sources():
    chunks = load_corpus(repo_root() / "datasets" / "knowledge")
    assert len({c.source for c in chunks}) >= 10
    assert len({c.chunk_id for c in chunks}) == len(chunks)  # stable, unique ids
    assert all(c.references for c in chunks), "every topic cites its sources"
    effusion = [c for c in chunks if c.topic == "pleural-effusion"]
    assert any("costophrenic" in c.text for c in effusion)
    assert all(c.title == "Pleural effusion" for c in effusion)
    assert {"Radiographic appearance", "Causes"} <= {c.heading for c in effusion}
    assert not any("## Sources" in c.text or "Light RW" in c.text for c in effusion)
    assert load_corpus(repo_root() / "datasets" / "knowledge")[0].chunk_id == chunks[0].chunk_id


def test_corpus_errors(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "nope")
    with pytest.raises(CorpusError, match="no .md or .txt"):
        load_corpus(tmp_path)
    (tmp_path / "x.md").write_text("no title here\n")
    with pytest.raises(CorpusError, match="needs an H1 title"):
        load_corpus(tmp_path)


def _png(size=(20, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 128).save(buf, "PNG")
    return buf.getvalue()


def test_decode_image_errors_are_specific():
    assert decode_image(_png()).size == (20, 10)
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"%PDF-1.4 hello")
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), "white").save(buf, "JPEG")
        decode_image(buf.getvalue()[:300])
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(_png((200, 200)), max_pixels=100)
