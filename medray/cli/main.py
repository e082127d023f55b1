"""The ``medray`` command. Each command group lives in its own module of this package."""

from __future__ import annotations

import logging

import click

from medray import __version__
from medray.cli import options
from medray.cli.analyze import analyze
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


QUIET_LOGGERS = (
    *(f"ray.{m}" for m in ("_private", "dashboard", "serve", "data", "util", "job_submission")),
    "pymilvus",
    "milvus_lite",
    "sentence_transformers",
    "httpx",
    "urllib3",
    "medray",
)


def setup_logging(verbose: int) -> None:
    """Warnings only by default; ``-v``: INFO of every library; ``-vv``: DEBUG."""
    level = (logging.WARNING, logging.INFO)[verbose] if verbose < 2 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    options.VERBOSITY = verbose
    # Ray sets its "ray" logger to INFO on import, but leaves the levels of most loggers
    # below it alone (see options.quiet_ray_sdk for one it sets): set them either way.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)


for command in (cluster, models, job, data, search, serve, analyze, report, demo):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
