"""The guard evaluation set (datasets/guard): size, balance, labels, the family split, and
that the shipped domain head was trained on the current tuning split only."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections import Counter

import pytest

from medray.paths import repo_root
from medray.safety.emergency import CATEGORIES
from medray.safety.guardset import GuardSetError, load_guard_set
from medray.safety.head import DomainHead

pytestmark = pytest.mark.unit

SHARED = repo_root().parent / "shared" / "data"


@pytest.fixture(scope="module")
def prompts():
    return load_guard_set()


def test_size_balance_and_the_hard_kinds(prompts):
    assert len(prompts) >= 300
    med = [p for p in prompts if p.medical]
    other = [p for p in prompts if not p.medical]
    assert len(other) >= 300 and len(med) >= 300
    real = Counter(p.source for p in med if p.source != "authored")
    assert set(real) == {"vqa_rad", "slake", "pubmedqa"} and sum(real.values()) >= 150
    kinds = Counter(p.kind for p in other)
    assert kinds["near_miss"] >= 40 and kinds["injection"] >= 40
    assert all(p.medical for p in prompts if p.emergency or p.interaction or p.dose)
    em = Counter(p.emergency for p in prompts if p.emergency)
    assert set(em) == set(CATEGORIES) and sum(em.values()) >= 40
    assert sum(p.interaction for p in prompts) >= 15 and sum(p.dose for p in prompts) >= 5


def test_the_split_is_by_family_and_texts_are_unique(prompts):
    split_of: dict[str, set[str]] = {}
    for p in prompts:
        split_of.setdefault(p.family, set()).add(p.split)
    assert all(len(s) == 1 for s in split_of.values()), "a family is in both splits"
    share = sum(p.split == "heldout" for p in prompts) / len(prompts)
    assert 0.3 < share < 0.5
    norm = [re.sub(r"[^a-z0-9 ]", "", p.text.lower()) for p in prompts]
    assert len(set(norm)) == len(norm)
    for kind in ("near_miss", "injection", "general", "vqa", "emergency"):
        assert {p.split for p in prompts if p.kind == kind} == {"tune", "heldout"}, kind


def test_the_shipped_head_was_trained_on_this_tuning_split_only(prompts):
    head = DomainHead.load()
    tune = [p for p in prompts if p.split == "tune"]
    digest = hashlib.sha256(
        "\n".join(f"{p.id}\t{p.text}\t{p.medical}" for p in tune).encode()
    ).hexdigest()[:16]
    assert head.meta["tune_set_sha256_16"] == digest, "re-run python -m medray.safety.train_head"
    assert head.meta["tune_prompts"] == len(tune) and head.meta["embedder"] == "minilm-l6"
    assert 0 < head.threshold < 1 and head.meta["chosen"]["threshold"] == head.threshold


@pytest.mark.skipif(not (SHARED / "vqa_rad").is_dir(), reason="needs ../shared/data")
def test_build_script_reproduces_the_committed_file():
    r = subprocess.run(
        [sys.executable, str(repo_root() / "datasets" / "guard" / "build.py"), "--check",
         "--shared", str(SHARED)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_malformed_files_get_a_clear_error(tmp_path):
    bad = tmp_path / "g.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n', encoding="utf-8")
    with pytest.raises(GuardSetError, match=r"g.jsonl:1: not a guard-set record"):
        load_guard_set(bad)
    with pytest.raises(GuardSetError, match="guard set not found"):
        load_guard_set(tmp_path / "missing.jsonl")
    with pytest.raises(GuardSetError, match="split must be one of"):
        load_guard_set(None, split="test")
