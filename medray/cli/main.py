"""The ``medray`` command. Each command group lives in its own module of this package."""

from __future__ import annotations

import logging

import click

from medray import __version__
from medray.cli.cluster import cluster
from medray.cli.data import data
from medray.cli.demo import demo
from medray.cli.job import job
from medray.cli.models import models
from medray.cli.report import report
from medray.cli.search import search
from medray.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="medray")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs.")
def cli(verbose: bool) -> None:
    """MedRay: train, index and serve medical vision-language models on Ray.

    Research use only: not a medical device.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


for command in (cluster, models, job, data, search, serve, report, demo):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
