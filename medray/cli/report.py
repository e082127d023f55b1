"""``medray report show | compare``: read evaluation reports (output folders of jobs/evaluate.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

_run_dir = click.Path(exists=True, file_okay=False, path_type=Path)


def _load(path: Path) -> tuple[Path, dict]:
    from medray.eval.folders import find_report_dir
    from medray.eval.report import ReportError, load_report

    try:
        folder = find_report_dir(path)
        return folder, load_report(folder)
    except ReportError as e:
        raise click.ClickException(str(e)) from None


def _rows(folder: Path) -> list[dict] | None:
    """The report's scored rows (``rows.parquet``), for paired differences; None if absent
    (a report written before the rows were kept)."""
    path = folder / "rows.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@click.group()
def report() -> None:
    """Read and compare evaluation reports (RUN = an output folder of `python -m jobs.evaluate`)."""


@report.command()
@click.argument("run", type=_run_dir)
@click.option("--json", "as_json", is_flag=True, help="Print the headline figures as JSON.")
def show(run: Path, as_json: bool) -> None:
    """Headline figures of every model in the report at RUN, and where its files are."""
    from medray.eval.metrics import headline
    from medray.eval.report import headline_rows
    from medray.eval.report_sections import fmt

    run, rep = _load(run)
    if as_json:
        click.echo(json.dumps({r["label"]: headline(r["metrics"]) for r in rep["runs"]}, indent=2))
        return
    from medray.cli import table

    labels = [r["label"] for r in rep["runs"]]
    rows = [[str(k), *[fmt(v) for v in vals]] for k, *vals in headline_rows(rep["runs"])]
    click.echo(f"{rep['dataset']} [{rep['split']}], {rep['n_rows']} rows, created {rep['created']}")
    table.echo(["metric", *labels], rows, right=range(1, len(labels) + 1))
    click.echo(f"report: {run / 'report.md'}")
    for name in sorted(rep.get("figures", {}).values()):
        click.echo(f"plot:   {run / name}")


@report.command()
@click.argument("run_a", type=_run_dir)
@click.argument("run_b", type=_run_dir)
@click.option(
    "--a-label", default=None, help="Which model of RUN_A (its label) [default: the first]."
)
@click.option(
    "--b-label", default=None, help="Which model of RUN_B (its label) [default: the first]."
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write compare.md and compare.json into this folder.")  # fmt: skip
def compare(
    run_a: Path, run_b: Path, a_label: str | None, b_label: str | None, out: Path | None
) -> None:
    """Two runs side by side: each headline metric, the difference B - A and who is ahead.

    RUN_A and RUN_B may be the same folder with different --a-label / --b-label (e.g. base
    and grpo of one evaluation); a run folder stands for its evaluate/ folder.
    """
    from medray.eval import compare as cmp
    from medray.eval.report import ReportError

    run_a, rep_a = _load(run_a)
    run_b, rep_b = _load(run_b)
    labels = [r["label"] for r in rep_a["runs"]]
    if run_a.resolve() == run_b.resolve() and (a_label or labels[0]) == (b_label or labels[0]):
        fix = (
            f"pick two of {', '.join(labels)} with --a-label/--b-label (e.g. --a-label "
            f"{labels[0]} --b-label {labels[-1]}) or give two runs"
            if len(labels) > 1
            else "its report has one model only: give the folder of another run as RUN_B"
        )
        raise click.UsageError(f"this compares model {a_label or labels[0]!r} with itself; {fix}")
    try:
        result = cmp.compare(
            rep_a, rep_b, a_label, b_label, str(run_a), str(run_b), _rows(run_a), _rows(run_b)
        )
    except ReportError as e:
        raise click.ClickException(str(e)) from None
    click.echo(cmp.render_text(result))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(cmp.render_markdown(result))
        (out / "compare.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        click.echo(f"written: {out / 'compare.md'}")
