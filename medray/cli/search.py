"""``medray search text | image | knowledge``: query the Milvus collections."""

from __future__ import annotations

import json
from pathlib import Path

import click


def _filters(items: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise click.BadParameter(f"{item!r} is not FIELD=VALUE", param_hint="--filter")
        out.setdefault(key, []).append(value)
    return out


def _run(ctx: click.Context, fn) -> None:
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
        hits = fn(Searcher(settings))
    except RetrievalError as e:
        raise click.ClickException(str(e)) from None
    if o["json"]:
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
        click.echo(f"{rank:2d}. {h.score:.4f}  {h.id}  [{where}]")
        if text:
            click.echo(f"      {text[:160]}{'...' if len(text) > 160 else ''}")


@click.group()
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
    """Search similar cases (CLIP) and the knowledge base (hybrid dense + BM25)."""
    ctx.obj = {"uri": uri, "db": db, "cases": cases, "knowledge": knowledge, "json": as_json}


_k = click.option("-k", "--top-k", "k", default=5, show_default=True, help="Number of results.")
_filter = click.option("--filter", "filters", multiple=True, metavar="FIELD=VALUE",
                       help="Filter on modality, split, source, organ or labels (repeatable).")  # fmt: skip


@search.command()
@click.argument("query")
@_k
@_filter
@click.pass_context
def text(ctx: click.Context, query: str, k: int, filters: tuple[str, ...]) -> None:
    """Cases whose IMAGE matches a text description (text -> image)."""
    _run(ctx, lambda s: s.text_to_image(query, k, _filters(filters)))


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
        _run(ctx, lambda s: s.image_to_image(data, k, _filters(filters)))
    else:
        _run(ctx, lambda s: s.image_to_text(data, k, _filters(filters)))


@search.command()
@click.argument("query")
@_k
@click.pass_context
def knowledge(ctx: click.Context, query: str, k: int) -> None:
    """Knowledge-base chunks for QUERY (hybrid dense + BM25, fused with RRF)."""
    _run(ctx, lambda s: s.search_knowledge(query, k))
