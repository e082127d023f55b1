"""The index job's cases input: its default, and clear errors before Ray starts."""

from __future__ import annotations

import pytest

from jobs.index import DEFAULT_CONFIG, CasesSettings, IndexConfig, InputError, cases_input
from medray.config import load_config

pytestmark = pytest.mark.unit


def test_default_input_is_where_the_preprocess_job_writes(medray_home):
    cfg = load_config(IndexConfig, DEFAULT_CONFIG)
    with pytest.raises(InputError) as e:
        cases_input(cfg.cases)  # nothing preprocessed in this fresh MEDRAY_HOME
    assert f"{medray_home}/data/synthetic does not exist" in str(e.value)
    assert "python -m jobs.preprocess" in str(e.value)


def test_empty_input_names_the_fix():
    with pytest.raises(InputError, match=r"cases.input is empty: .*cases.enabled=false"):
        cases_input(CasesSettings(input=" "))


def test_folder_without_manifest_is_named_as_such(tmp_path):
    (tmp_path / "part.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="no _SUCCESS manifest"):
        cases_input(CasesSettings(input=str(tmp_path)))


def test_a_milvus_lite_file_is_refused_before_ray_starts(tmp_path):
    """One process at a time can open a Milvus Lite file; the job's Ray workers write to
    Milvus, so with a file they waited on its lock for ever (seen: 10 minutes, no output)."""
    from jobs.index import main, milvus_server_uri
    from medray.retrieval.store import MilvusSettings

    cfg = load_config(IndexConfig, DEFAULT_CONFIG, [f"milvus.uri={tmp_path / 'm.db'}"])
    with pytest.raises(InputError, match=r"Milvus Lite file.*medray cluster up"):
        main(cfg)
    for uri in ("http://127.0.0.1:19530", "https://milvus.example:443", "unix:/tmp/m.sock"):
        assert milvus_server_uri(MilvusSettings(uri=uri)) == uri
