"""The ``medray`` command. Each command group lives in its own module of this package."""

from __future__ import annotations

import logging
import os

import click

from medray import __version__
from medray.cli.cluster import cluster
from medray.cli.data import data
from medray.cli.demo import demo
from medray.cli.job import job
from medray.cli.models import models
from medray.cli.options import AnywhereGroup
from medray.cli.report import report
from medray.cli.search import search
from medray.cli.serve import serve


@click.group(
    cls=AnywhereGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="medray")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Show the libraries' INFO logs (-vv: debug logs). Allowed anywhere on the line.",
)
def cli(verbose: int) -> None:
    """MedRay: train, index and serve medical vision-language models on Ray.

    Research use only: not a medical device.
    """
    setup_logging(verbose)


def setup_logging(verbose: int) -> None:
    """Warnings only by default; ``-v``: INFO of every library; ``-vv``: DEBUG."""
    level = (logging.WARNING, logging.INFO)[verbose] if verbose < 2 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Libraries with loggers of their own, read when they are first imported.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("RAY_LOGGING_LEVEL", "warning")
        for name in ("ray", "pymilvus", "sentence_transformers", "httpx", "milvus_lite"):
            logging.getLogger(name).setLevel(logging.WARNING)


for command in (cluster, models, job, data, search, serve, report, demo):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
