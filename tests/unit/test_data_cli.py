"""`medray data inspect` refuses what is not a complete, valid output."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from medray.cli.main import cli
from medray.data.output import FORMAT, SUCCESS, write_parquet
from medray.data.schema import SCHEMA_VERSION, table_from_rows

pytestmark = pytest.mark.unit


def test_inspect_refuses_a_folder_without_manifest(tmp_path):
    (tmp_path / "train").mkdir()
    res = CliRunner().invoke(cli, ["data", "inspect", str(tmp_path)])
    assert res.exit_code == 1
    assert "no _SUCCESS manifest" in res.output


def test_inspect_validates_the_rows_it_reads(tmp_path):
    row = {
        "sample_id": "m:1",
        "source": "m",
        "original_id": "1",
        "split": "train",
        "task": "mcq",
        "question": "Q?",
        "answer": "a",
        "answer_type": "choice",
        "choices": ["a", "b"],
    }
    write_parquet(table_from_rows([row]), str(tmp_path / "train/part-0.parquet"))
    manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "data_dir": "",
                "files": {"train": ["train/part-0.parquet"]}, "quarantine": [], "counts": {}}  # fmt: skip
    (tmp_path / SUCCESS).write_text(json.dumps(manifest))
    res = CliRunner().invoke(cli, ["data", "inspect", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "1 rows (schema valid)" in res.output and "question: Q?" in res.output
    # A row that breaks the value rules makes the read fail, naming the row.
    write_parquet(table_from_rows([{**row, "answer": "c"}]), str(tmp_path / "train/part-0.parquet"))
    res = CliRunner().invoke(cli, ["data", "inspect", str(tmp_path)])
    assert res.exit_code == 1 and "row 'm:1': answer is not one of the choices" in res.output


def test_inspect_names_a_path_that_does_not_exist(tmp_path):
    res = CliRunner().invoke(cli, ["data", "inspect", str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert f"{tmp_path / 'nope'} does not exist" in res.output and "_SUCCESS" not in res.output


def test_readers_name_a_path_that_does_not_exist(tmp_path):
    """Every reader of preprocessed outputs (training, inference, indexing) goes through
    load_manifest: a wrong path is named as missing, not as a folder without a manifest."""
    from medray.data.output import OutputError, load_manifest

    with pytest.raises(OutputError) as e:
        load_manifest(str(tmp_path / "nope"))
    assert f"{tmp_path / 'nope'} does not exist" in str(e.value)
    assert "_SUCCESS" not in str(e.value) and "jobs.preprocess" in str(e.value)
