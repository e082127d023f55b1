"""``medray search text | image | knowledge | filters``: query the Milvus collections."""

from __future__ import annotations

import json
from pathlib import Path

import click

from medray.cli.options import AnywhereGroup, quiet_models

FILTER_HELP = (
    "FIELD=VALUE on modality, split, source, organ or labels (repeatable; values of one "
    "field are OR-ed). Case-insensitive; a value that equals no stored value matches those "
    "containing it as a word (labels=effusion -> Pleural Effusion). "
    "`medray search filters` lists the values."
)


def _searcher(ctx: click.Context):
    quiet_models()
    from medray.cli.cluster import local_milvus_uri
    from medray.retrieval import MilvusSettings, RetrievalError
    from medray.retrieval.search import Searcher

    o = ctx.obj
    settings = MilvusSettings(
        uri=local_milvus_uri(o["uri"]),
        db_name=o["db"],
        cases_collection=o["cases"],
        knowledge_collection=o["knowledge"],
    )
    try:
        return Searcher(settings)
    except RetrievalError as e:
        raise click.ClickException(str(e)) from None


def _check_filters(searcher, items: tuple[str, ...], collection: str) -> dict[str, list[str]]:
    """Parse FIELD=VALUE items; refuse values the collection does not hold, listing those it does."""
    from medray.retrieval import filters

    try:
        parsed = filters.parse(items)
    except filters.FilterError as e:
        raise click.BadParameter(str(e), param_hint="--filter") from None
    if not parsed:
        return parsed
    known, complete = searcher.filter_values(collection)
    unknown_fields = [f for f in parsed if f not in known]
    if unknown_fields:
        raise click.BadParameter(
            f"cannot filter on {unknown_fields[0]!r}; filterable fields: {', '.join(known)}",
            param_hint="--filter",
        )
    bad = filters.unmatched(parsed, known)
    if bad and complete:
        field, values = next(iter(bad.items()))
        raise click.BadParameter(
            f"no {collection} row has {field}={values[0]!r}; values there: "
            + (", ".join(known[field]) or "(none)"),
            param_hint="--filter",
        )
    return parsed


def _run(ctx: click.Context, fn, filter_items: tuple[str, ...] = (), collection="cases") -> None:
    from medray.retrieval import RetrievalError

    try:
        searcher = _searcher(ctx)
        hits = fn(searcher, _check_filters(searcher, filter_items, collection))
    except RetrievalError as e:
        raise click.ClickException(str(e)) from None
    if ctx.obj["json"]:
        click.echo(
            json.dumps([{"id": h.id, "score": h.score, **h.payload} for h in hits], indent=2)
        )
        return
    if not hits:
        click.echo("no results")
    for rank, h in enumerate(hits, 1):
        p = h.payload
        text = p.get("report") or p.get("text") or ""
        where = p.get("title") or ", ".join(x for x in (p.get("modality"), p.get("split")) if x)
        labels = f"  labels: {', '.join(p['labels'])}" if p.get("labels") else ""
        click.echo(f"{rank:2d}. {h.score:.4f}  {h.id}  [{where}]{labels}")
        if text:
            text = " ".join(text.split())
            click.echo(f"      {text[:160]}{'...' if len(text) > 160 else ''}")


@click.group(cls=AnywhereGroup)
@click.option(
    "--milvus-uri",
    "uri",
    default="",
    help="Milvus URI [default: $MEDRAY_MILVUS_URI or the local cluster's]; the token comes "
    "from $MEDRAY_MILVUS_TOKEN, TLS files from $MEDRAY_MILVUS_TLS_*.",
)
@click.option(
    "--db", default="", help="Milvus database [default: $MEDRAY_MILVUS_DB or the server's]."
)
@click.option("--cases", default="cases", show_default=True, help="Cases collection.")
@click.option("--knowledge", default="knowledge", show_default=True, help="Knowledge collection.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.pass_context
def search(
    ctx: click.Context, uri: str, db: str, cases: str, knowledge: str, as_json: bool
) -> None:
    """Search similar cases (CLIP) and the knowledge base (hybrid dense + BM25).

    Options of this group may come before or after the subcommand.
    """
    ctx.obj = {"uri": uri, "db": db, "cases": cases, "knowledge": knowledge, "json": as_json}


_k = click.option("-k", "--top-k", "k", default=5, show_default=True, help="Number of results.")
_filter = click.option(
    "--filter", "filters", multiple=True, metavar="FIELD=VALUE", help=FILTER_HELP
)


@search.command()
@click.argument("query")
@_k
@_filter
@click.pass_context
def text(ctx: click.Context, query: str, k: int, filters: tuple[str, ...]) -> None:
    """Cases whose IMAGE matches a text description (text -> image)."""
    _run(ctx, lambda s, f: s.text_to_image(query, k, f), filters)


@search.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", type=click.Choice(["image", "text"]), default="image", show_default=True,
              help="Compare with case images (image -> image) or reports (image -> text).")  # fmt: skip
@_k
@_filter
@click.pass_context
def image(ctx: click.Context, path: Path, target: str, k: int, filters: tuple[str, ...]) -> None:
    """Cases similar to the image at PATH."""
    data = path.read_bytes()
    if target == "image":
        _run(ctx, lambda s, f: s.image_to_image(data, k, f), filters)
    else:
        _run(ctx, lambda s, f: s.image_to_text(data, k, f), filters)


@search.command()
@click.argument("query")
@_k
@click.pass_context
def knowledge(ctx: click.Context, query: str, k: int) -> None:
    """Knowledge-base chunks for QUERY (hybrid dense + BM25, fused with RRF)."""
    _run(ctx, lambda s, f: s.search_knowledge(query, k), (), "knowledge")


@search.command("filters")
@click.option(
    "--collection",
    type=click.Choice(["cases", "knowledge"]),
    default="cases",
    show_default=True,
    help="Which collection's fields.",
)
@click.pass_context
def filters_cmd(ctx: click.Context, collection: str) -> None:
    """The values each filterable field holds (what `--filter FIELD=VALUE` can match)."""
    from medray.cli import table
    from medray.retrieval import RetrievalError

    try:
        known, complete = _searcher(ctx).filter_values(collection)
    except RetrievalError as e:
        raise click.ClickException(str(e)) from None
    if ctx.obj["json"]:
        click.echo(json.dumps(known, indent=2))
        return
    table.echo(["field", "values"], [[f, ", ".join(v) or "(none)"] for f, v in known.items()])
    if not complete:
        click.echo("(values of the first rows only: the collection is larger)")
    click.echo("Matching ignores case; e.g. --filter labels=effusion --filter modality=X-RAY")
