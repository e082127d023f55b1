"""jobs/train_sft.py on the shared cluster: the medical-QA model, and an empty dataset
refused before any worker starts. The reasoner SFT under ZeRO-3 with a SIGKILLed worker
(resumed, evaluated, its adapter merged with peft) and the summariser SFT with an injected
failure run inside the pipeline's serve test (test_pipeline_job.py), which serves both."""

from __future__ import annotations

from pathlib import Path

import pytest
from sft_data import write_sft_data

from jobs.train_sft import SFTInputError, TrainSFTConfig, run
from medray.config import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    return write_sft_data(tmp_path_factory.mktemp("sft") / "data", n_train=48, n_test=12)


def _cfg(name: str, data: Path, run_name: str, *overrides: str) -> TrainSFTConfig:
    return load_config(
        TrainSFTConfig,
        REPO / "jobs" / "configs" / f"{name}.yaml",
        [f"data.input={data}", f"run.name={run_name}", *overrides],
    )


def test_medqa_trains_and_evaluates(ray_cluster, sft_data):
    """The text medical-QA model (the summariser's SFT runs in test_pipeline_job.py: two
    workers, a resumed failure, ROUGE on held-out reports)."""
    s = run(
        _cfg("sft_medqa_tiny", sft_data, "sft-medqa-t", "sft.optim.max_steps=6",
             "sft.optim.logging_steps=2", "scaling.num_workers=1")
    )  # fmt: skip
    assert s["steps"] == 6 and s["loss_last"] < s["loss_first"]
    assert s["eval"]["n"] == 12
    assert s["training_mode"] == "LoRA"  # QLoRA asked for, no GPU: plain LoRA
    assert 0.0 <= s["eval"]["accuracy"] <= 1.0


def test_a_dataset_without_rows_for_the_task_is_refused_before_training(ray_cluster, tmp_path):
    data = write_sft_data(tmp_path / "d", n_train=4, n_test=2)
    cfg = _cfg("sft_medqa_tiny", data, "sft-empty", "data.limit_train=0")
    # A preprocessed output holding only VQA rows has nothing for the medical-QA task.
    import pyarrow.parquet as pq

    for split in ("train", "test"):
        f = data / split / "part-0.parquet"
        t = pq.read_table(f)
        pq.write_table(t.filter(_mask(t, "vqa")), f)
    with pytest.raises(SFTInputError, match="no usable rows for task 'medqa'"):
        run(cfg)


def _mask(table, task: str):
    import pyarrow.compute as pc

    return pc.equal(table.column("task"), task)
