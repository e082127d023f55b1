"""Sizing and start-up of batch inference's Ray Data actor pool (``jobs.batch_infer`` and
``benchmarks/batch_infer.py``); ``a`` is the job's ``ActorSettings`` (``concurrency``,
``num_cpus``, ``num_gpus``, ``start_timeout_s``, ``max_tasks_in_flight``)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def pool_capacity(a: Any) -> int:
    """How many actors of the pool the cluster's alive nodes can host at once (CPUs and
    GPUs per node, not the cluster's totals: an actor cannot span nodes)."""
    import ray

    fits = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        per = [
            res.get(k, 0.0) // need
            for k, need in (("CPU", a.num_cpus), ("GPU", a.num_gpus))
            if need > 0
        ]
        fits += int(min(per)) if per else a.concurrency
    return fits


def configure_pool(ds, a: Any):
    """Make ``ds``'s actor pool hand out rows only once all its actors are up (also used by
    ``benchmarks/batch_infer.py``); returns ``ds``.

    Ray Data reads the setting from the dataset's own ``DataContext``, a copy taken when the
    dataset was created: setting ``DataContext.get_current()`` afterwards (as this job did
    until 2026-12-04) changes nothing, and the first actor up took a small split alone.
    A pool larger than the cluster can host now waits up to ``start_timeout_s`` for an
    autoscaler to add nodes, and says so.
    """
    fits = pool_capacity(a)
    if fits < a.concurrency:
        log.warning(
            "the actor pool needs %d actors of %s CPU / %s GPU, the cluster's nodes can host "
            "%d now: waiting up to %d s (actors.start_timeout_s) for more nodes; lower "
            "actors.concurrency or the per-actor resources if none will come",
            a.concurrency, a.num_cpus, a.num_gpus, fits, a.start_timeout_s,
        )  # fmt: skip
    ds.context.wait_for_min_actors_s = a.start_timeout_s
    return ds


def tasks_in_flight(a: Any, num_batches: int) -> int:
    """Batches queued per actor: ``max_tasks_in_flight`` once every actor has at least
    four batches to do, else 1. Ray Data gives a batch to an actor with a free slot, so
    with several slots per actor a split of a few batches can end up on the first actors
    it finds free; one at a time is the fairer hand-out when there is little to share."""
    return a.max_tasks_in_flight if num_batches >= 4 * a.concurrency else 1
