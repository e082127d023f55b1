"""The guard evaluation set (``datasets/guard/guard.jsonl``): loading and validation.

One JSON object per line: ``id``, ``text``, ``medical`` (the domain label), ``source``
(``vqa_rad`` / ``slake`` / ``pubmedqa`` / ``authored``), ``family`` (the unit of the split),
``kind``, ``emergency`` (category or ""), ``interaction`` and ``dose`` (booleans) and
``split`` (``tune`` or ``heldout``). ``datasets/guard/build.py`` writes it; its README says
how it was made and split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medray.paths import repo_root
from medray.safety.emergency import CATEGORIES

SPLITS = ("tune", "heldout")


class GuardSetError(ValueError):
    """A malformed guard-set file (the message names the line)."""


@dataclass(frozen=True)
class GuardPrompt:
    """One labelled prompt of the guard set."""

    id: str
    text: str
    medical: bool
    source: str
    family: str
    kind: str
    emergency: str
    interaction: bool
    dose: bool
    split: str


def default_path() -> Path:
    return repo_root() / "datasets" / "guard" / "guard.jsonl"


def load_guard_set(path: str | Path | None = None, split: str | None = None) -> list[GuardPrompt]:
    """Read and validate the guard set; ``split`` keeps one split (``tune`` / ``heldout``)."""
    path = Path(path) if path else default_path()
    if not path.is_file():
        raise GuardSetError(f"guard set not found: {path} (run python datasets/guard/build.py)")
    if split is not None and split not in SPLITS:
        raise GuardSetError(f"split must be one of {SPLITS}, got {split!r}")
    out: list[GuardPrompt] = []
    ids: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            p = GuardPrompt(**{k: d[k] for k in GuardPrompt.__dataclass_fields__})
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise GuardSetError(f"{path}:{n}: not a guard-set record ({e})") from e
        if not p.text.strip() or p.split not in SPLITS or not isinstance(p.medical, bool):
            raise GuardSetError(f"{path}:{n}: empty text, bad split or non-boolean label")
        if p.emergency and p.emergency not in CATEGORIES:
            raise GuardSetError(f"{path}:{n}: unknown emergency category {p.emergency!r}")
        if p.id in ids:
            raise GuardSetError(f"{path}:{n}: duplicate id {p.id}")
        ids.add(p.id)
        if split is None or p.split == split:
            out.append(p)
    return out
