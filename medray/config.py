"""Typed configuration: frozen dataclasses loaded from YAML with ``key=value`` overrides.

Every job and app has one frozen dataclass config. ``load_config`` reads a YAML file,
applies dotted ``key=value`` overrides from the command line and builds the dataclass,
checking every key and type on the way:

    cfg = load_config(SFTJobConfig, "jobs/configs/sft_tiny.yaml", ["train.epochs=2"])

An unknown key is an error that names the key and lists the valid ones; a value of the
wrong type is an error that names the key, the expected type and the value. Sequences
become tuples so that configs stay immutable and hashable.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key and why."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read one YAML mapping from ``path``.

    Raises:
        ConfigError: the file is missing, unparsable or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys to values")
    return data


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into ``{"a": {"b": 1}, "c": "x"}``.

    Values are parsed as YAML scalars or flow collections (``true``, ``3``, ``[1, 2]``).
    """
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.epochs=2)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {item!r} conflicts with an earlier override of {part!r}"
                )
            node = child
        node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base`` (mappings merge, other values replace)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build config ``cls`` from an optional YAML file plus ``key=value`` overrides.

    An error names its source (see ``blame``): the file, or the command-line override.
    """
    data = load_yaml(path) if path else {}
    update = parse_overrides(overrides)  # its errors name the override already
    try:
        return from_dict(cls, merge(data, update))
    except ConfigError as e:
        where = str(path) if path else cls.__name__
        build = lambda items: from_dict(cls, merge(data, parse_overrides(items)))  # noqa: E731
        raise ConfigError(blame(e, where, build, overrides)) from None


def blame(error: Exception, where: str, build, overrides: Sequence[str]) -> str:
    """The message of ``error``, raised building a config from a file (``where``) plus
    command-line ``overrides``, prefixed with its source: the file when the file alone is
    wrong, else the first override that alone raises the same error, else the overrides
    together (an override can be wrong alone and right with the others: ``aggregate`` off
    beside a single predictions folder).

    ``build(items)``: builds the config from the file plus ``items`` (raises ConfigError).
    """
    if overrides:
        try:
            build([])
        except ConfigError:
            pass
        else:
            for item in overrides:
                try:
                    build([item])
                except ConfigError as e:
                    if str(e) == str(error):
                        return f"command-line override {item!r}: {e}"
            return f"the command-line overrides together ({' '.join(overrides)}): {error}"
    return str(error) if where in str(error) else f"{where}: {error}"


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys and bad types raise)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{prefix or cls.__name__}: expected a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown key {_join(prefix, key)!r}{hint}; valid keys"
            f"{' under ' + repr(prefix) if prefix else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, _join(prefix, name))
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required key {_join(prefix, missing[0])!r}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix + ': ' if prefix else ''}{e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-YAML-ready dict of a config (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def replace(cfg: T, overrides: Sequence[str]) -> T:
    """Return a copy of ``cfg`` with ``key=value`` overrides applied (validated)."""
    return from_dict(type(cfg), merge(to_dict(cfg), parse_overrides(overrides)))


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``tp``, converting where lossless; raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value if value is not None else {}, where)
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (tuple, list, Sequence):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _convert(a, v, f"{where}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item_tp = args[0] if args else Any
        return tuple(_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _convert(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # PyYAML reads 5e-6 (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r} (quote it in YAML)")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def parse_args(
    cls: type[T],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    default_config: str | Path | None = None,
) -> T:
    """Command-line entry for a job: ``--config FILE`` plus ``key=value`` overrides.

    ``--print-config`` prints the resolved config as YAML and exits.
    """
    keys = ", ".join(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else None,
        epilog=f"Overrides are dotted key=value pairs; top-level keys: {keys}.",
    )
    parser.add_argument(
        "--config",
        default=str(default_config) if default_config else None,
        help=f"YAML config file (default: {default_config or 'built-in defaults'})",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    ns = parser.parse_args(argv)
    try:
        cfg = load_config(cls, ns.config, ns.overrides)
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: config error: {e}\n")
    if ns.print_config:
        yaml.safe_dump(to_dict(cfg), sys.stdout, sort_keys=False)
        parser.exit(0)
    return cfg
