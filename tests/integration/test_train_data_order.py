"""Every Ray Train worker reads the train split in the same row order.

The SFT and GRPO workers each stream the whole split (``unsplit_data_config``) and let
accelerate shard it by position, which is right only if every rank holds the rows in the
same order. Here the blocks finish out of order on purpose (random sleeps, three CPUs for
Ray Data), as they do on a loaded cluster.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _loop(config) -> None:
    import tempfile

    import ray.train

    from medray.train.ray_hf import dataset_from_ray, gather_workers, row_order

    with tempfile.TemporaryDirectory() as workdir:
        local = dataset_from_ray("train", workdir)
        workers = gather_workers(train_order=row_order(local, "sample_id"), rows=len(local))
    ray.train.report({"workers": workers})


def _shuffled_blocks(batch):
    import random
    import time

    time.sleep(random.random() * 0.4)  # blocks finish in an order of their own
    return {"sample_id": [f"row-{i:04d}" for i in batch["id"]]}


def test_every_rank_reads_the_train_split_in_the_same_order(ray_cluster, tmp_path):
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from medray.train.ray_hf import unsplit_data_config

    ds = ray.data.range(240, override_num_blocks=24).map_batches(_shuffled_blocks)
    trainer = TorchTrainer(
        _loop,
        # No CPU for the workers: Ray Data gets all three, so blocks run side by side.
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0}),
        run_config=RunConfig(name="data-order", storage_path=str(tmp_path)),
        datasets={"train": ds},
        dataset_config=unsplit_data_config(),
    )
    workers = trainer.fit().metrics["workers"]
    assert [w["rows"] for w in workers] == [240, 240]
    assert len({w["train_order"] for w in workers}) == 1, workers
