"""Every Ray Train worker reads the train split in the same row order.

The SFT and GRPO workers each stream the whole split (``unsplit_data_config``) and let
accelerate shard it by position, which is right only if every rank holds the rows in the
same order. Here the blocks finish out of order on purpose (random sleeps, many small
tasks side by side), as they do on a loaded cluster.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def _loop(config) -> None:
    import json
    import tempfile
    from pathlib import Path

    import ray.train

    from medray.train.ray_hf import dataset_from_ray, gather_workers, row_order

    with tempfile.TemporaryDirectory() as workdir:
        local = dataset_from_ray("train", workdir)
        workers = gather_workers(train_order=row_order(local, "sample_id"), rows=len(local))
    if ray.train.get_context().get_world_rank() == 0:  # one machine: the test reads it
        Path(config["out"]).write_text(json.dumps(workers))


def _shuffled_blocks(batch):
    import random
    import time

    time.sleep(random.random() * 0.4)  # blocks finish in an order of their own
    return {"sample_id": [f"row-{i:04d}" for i in batch["id"]]}


def test_every_rank_reads_the_train_split_in_the_same_order(ray_cluster, tmp_path):
    import sys

    import ray
    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from medray.train.ray_hf import unsplit_data_config

    # The workers cannot import this test module: ship its functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    # A tenth of a CPU per map task: with the two workers' CPUs taken, about ten blocks
    # still run side by side and finish in the order their sleeps give them.
    rows = ray.data.range(240, override_num_blocks=24).materialize()
    ds = rows.map_batches(_shuffled_blocks, num_cpus=0.1)
    out = tmp_path / "workers.json"
    trainer = TorchTrainer(
        _loop,
        train_loop_config={"out": str(out)},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="data-order", storage_path=str(tmp_path)),
        datasets={"train": ds},
        dataset_config=unsplit_data_config(),
    )
    trainer.fit()
    workers = json.loads(out.read_text())
    assert [w["rows"] for w in workers] == [240, 240]
    assert len({w["train_order"] for w in workers}) == 1, workers


def test_a_split_materialised_on_the_driver_keeps_its_input_order(ray_cluster):
    """The SFT / GRPO jobs materialise the split on the driver before training: with
    ``materialize_in_order`` the stored rows follow the input, so two runs of one config
    train on one order (plain ``materialize`` stores the blocks as they finish)."""
    import sys

    import ray
    from ray import cloudpickle

    from medray.train.ray_hf import materialize_in_order

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ds = ray.data.range(240, override_num_blocks=24).map_batches(_shuffled_blocks, num_cpus=0.1)
    before = ds.context.execution_options.preserve_order
    stored = materialize_in_order(ds)
    assert [r["sample_id"] for r in stored.iter_rows()] == [f"row-{i:04d}" for i in range(240)]
    assert ds.context.execution_options.preserve_order == before  # put back
