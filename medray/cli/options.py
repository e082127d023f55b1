"""Command groups whose own options may also come after the subcommand.

Click parses a group's options only before the subcommand's name, so
``medray search text "effusion" --json`` was refused although ``medray search --json
text "effusion"`` worked, and ``-v`` had to be the first word. ``AnywhereGroup`` moves
its own options (and their values) found after the subcommand to the front, unless the
subcommand (or one below it) has an option of the same name; nothing after ``--`` moves.
"""

from __future__ import annotations

import logging
import os

import click

VERBOSITY = 0  # -v count of this invocation (set by medray.cli.main)


def quiet_models() -> None:
    """Without -v: no transformers warnings or weight-loading progress bars in this process.

    Set only by commands that load models here (search): the environment of commands
    that start cluster processes must not carry these settings to the jobs.
    """
    if VERBOSITY:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def quiet_ray_sdk() -> None:
    """Without -v: Ray's dashboard SDK (deploys, uploads) logs warnings only.

    It sets its logger to INFO when imported, so it is imported here first.
    """
    if not VERBOSITY:
        import ray.dashboard.modules.dashboard_sdk as sdk

        sdk.logger.setLevel(logging.WARNING)


def _option_names(cmd: click.Command, ctx: click.Context) -> set[str]:
    """Every option name of ``cmd`` and the commands below it."""
    names: set[str] = set()
    for p in cmd.get_params(ctx):
        if isinstance(p, click.Option):
            names.update(p.opts + p.secondary_opts)
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            names |= _option_names(sub, ctx)
    return names


def hoist(group: click.Group, ctx: click.Context, args: list[str]) -> list[str]:
    """``args`` with ``group``'s own options that follow its subcommand moved before it."""
    own: dict[str, bool] = {}  # option name -> takes a value
    for p in group.get_params(ctx):
        if isinstance(p, click.Option) and not p.hidden and p.name not in ("help", "version"):
            for name in p.opts + p.secondary_opts:
                own[name] = not (p.is_flag or p.count)
    sub_at, i = None, 0
    while i < len(args) and sub_at is None:
        a = args[i]
        if a == "--" or (not a.startswith("-") and a not in group.commands):
            break
        if a in group.commands:
            sub_at = i
        elif own.get(a):
            i += 1  # skip the option's value
        i += 1
    if sub_at is None or not own:
        return args
    below = _option_names(group.commands[args[sub_at]], ctx)
    movable = {n: v for n, v in own.items() if n not in below}
    front, rest, i = list(args[:sub_at]), [], sub_at
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        name = a.split("=", 1)[0] if a.startswith("--") else a
        if name in movable:
            front.append(a)
            if movable[name] and "=" not in a and i + 1 < len(args):
                front.append(args[i + 1])
                i += 1
        else:
            rest.append(a)
        i += 1
    return front + rest


class AnywhereGroup(click.Group):
    """A ``click.Group`` that accepts its options after the subcommand as well."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist(self, ctx, args))
