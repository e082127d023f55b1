"""``medray data synth | inspect``: synthetic datasets and preprocessed outputs."""

from __future__ import annotations

import json
from collections import Counter

import click


@click.group()
def data() -> None:
    """Synthetic datasets in real layouts, and inspection of preprocessed outputs."""


@data.command()
@click.option(
    "--kind",
    type=click.Choice(["mimic-cxr", "slake", "vqa-rad", "medmcqa"]),
    required=True,
    help="Dataset layout to write.",
)
@click.option("--n", "n", type=int, required=True, help="Images to draw (MedMCQA: questions).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to create.")
@click.option(
    "--image-size",
    type=int,
    default=None,
    help="Image edge in pixels [default: 512 for mimic-cxr, 384 for slake and vqa-rad].",
)
@click.option(
    "--layout",
    type=click.Choice(["mevf", "osf"]),
    default="mevf",
    show_default=True,
    help="VQA-RAD only: MEVF trainset/testset.json or the OSF public JSON.",
)
@click.option("--workers", type=int, default=1, show_default=True, help="Processes drawing images.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def synth(kind, n, seed, out, image_size, layout, workers, overwrite) -> None:
    """Write a synthetic dataset in its real on-disk layout, deterministically.

    The readers of `jobs/preprocess.py` read it exactly like the real dataset; images
    carry learnable findings, and the text (reports, answers) follows from the pixels.
    """
    from medray.data.synth import SynthError, generate

    try:
        res = generate(kind, out, n, seed, image_size, layout, workers, overwrite)
    except SynthError as e:
        raise click.UsageError(str(e)) from None
    click.echo(
        f"Wrote synthetic {kind}: {res['images'] or n} "
        f"{'images' if res['images'] else 'questions'}, {res['files']} files -> {res['out']}"
    )


@data.command()
@click.argument("path")
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test"]),
    default=None,
    help="One split only.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect(path: str, split: str | None, as_json: bool) -> None:
    """Read a preprocessed output with schema validation and summarise it.

    PATH is an output folder or URI of `jobs/preprocess.py`. Prints row counts by
    source, split and task, the quarantine and duplicate counts, and one example row
    (without the image bytes). Exits 1 if the output is incomplete or breaks the schema.
    """
    from medray.data import io
    from medray.data.output import OutputError, load_manifest, read_quarantine, read_table
    from medray.data.schema import SchemaError

    location = io.resolve_location(path, base=".")
    if not io.exists(location):
        raise click.ClickException(
            f"{location} does not exist; pass the output folder of `python -m jobs.preprocess` "
            "(its `output`, by default $MEDRAY_HOME/data/<name>)"
        )
    try:
        manifest = load_manifest(location)
        table = read_table(location, split=split)
        quarantine = read_quarantine(location)
    except (OutputError, SchemaError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    rows = table.drop_columns(["image"]).to_pylist()
    has_image = table.column("image").is_valid().to_pylist()
    info = {
        "path": location,
        "rows": table.num_rows,
        "by_source": dict(Counter(r["source"] for r in rows)),
        "by_split": dict(Counter(r["split"] for r in rows)),
        "by_task": dict(Counter(r["task"] for r in rows)),
        "with_image": sum(has_image),
        "quarantined": quarantine.num_rows,
        "quarantine_reasons": dict(
            Counter(
                r.split(":", 1)[0] for r in quarantine.column("reason").to_pylist()
            ).most_common()
        ),
        "duplicates": manifest.get("counts", {}).get("duplicates"),
        "example": None,
    }
    if rows:
        ex = dict(rows[0])
        ex["image"] = (
            f"<{len(table.column('image')[0].as_py() or b'')} bytes>" if has_image[0] else None
        )
        info["example"] = ex
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False, default=str))
        return
    click.echo(f"{location}: {info['rows']} rows (schema valid), {info['with_image']} with images")
    for key in ("by_source", "by_split", "by_task"):
        click.echo(f"  {key[3:]:7s} " + ", ".join(f"{k} {v}" for k, v in sorted(info[key].items())))
    click.echo(
        f"  quarantined {info['quarantined']}"
        + (
            " (" + ", ".join(f"{k}: {v}" for k, v in info["quarantine_reasons"].items()) + ")"
            if info["quarantined"]
            else ""
        )
    )
    click.echo(f"  duplicates dropped {info['duplicates']}")
    if info["example"]:
        click.echo("example row:")
        for k, v in info["example"].items():
            if v not in (None, [], ""):
                click.echo(f"  {k}: {str(v)[:200]}")
