"""Process-level helpers shared by jobs: connecting to Ray, logging setup."""

from __future__ import annotations

import logging
import os
from typing import Any


def init_ray(**kwargs: Any) -> None:
    """Connect to the cluster in ``RAY_ADDRESS`` (set inside ``ray job submit`` and by
    ``eval "$(medray cluster env)"``), else start a fresh local Ray.

    ``ray.init()`` with no address would attach to whatever cluster a previous
    ``ray start`` recorded, even a dead one, so the fallback is explicitly ``local``.
    """
    import ray

    explain_false_hang_warnings()
    if ray.is_initialized():
        return
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", **kwargs)


# Ray Data warns "The Dataset job will hang unless more CPUs are freed up" whenever a
# dataset starts executing at a moment when no CPU is free, e.g. while the previous
# step's actors (a training run, an actor pool) are still being torn down. Those CPUs
# come back a moment later and the run goes on, so successful runs ended with a warning
# that they would hang. A job that really waits is stopped, with the resource and the
# fix, by `medray job submit` (medray.cluster.pending).
HANG_WARNING = "will hang unless more CPUs are freed up"
HANG_EXPLAINED = (
    "no CPU was free when this dataset started (the previous step's workers were still "
    "releasing theirs); it starts as soon as one is. A job that stays blocked is stopped "
    "by `medray job submit` (--stuck-timeout) with the reason."
)


class HangWarningFilter(logging.Filter):
    """Turns Ray Data's momentary "will hang" warning into an INFO line that explains it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if HANG_WARNING in record.getMessage():
            record.msg, record.args = HANG_EXPLAINED, ()
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def explain_false_hang_warnings() -> None:
    """Install ``HangWarningFilter`` on Ray Data's dataset logger (once)."""
    logger = logging.getLogger("ray.data.dataset")
    if not any(isinstance(f, HangWarningFilter) for f in logger.filters):
        logger.addFilter(HangWarningFilter())


def setup_logging(level: int = logging.INFO) -> None:
    """Plain timestamped logging for job entry points."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
