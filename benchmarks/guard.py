"""The guard on its labelled evaluation set: domain control, emergencies, interactions, doses.

    python benchmarks/guard.py                      # held-out split (the reported figure)
    python benchmarks/guard.py --split tune         # the split the head was trained on
    python benchmarks/guard.py --split all --repeats 3

Reads ``datasets/guard/guard.jsonl`` (README there: sources, labels, split). One JSON line
per result:

- ``domain``: what a user sees from ``assess_request`` (refused or not) for three guards
  measured in the same run: the shipped head (``medray/safety/domain_head.json``), a
  candidate head (``--candidate``; default the LoRA-adapter head of 2026-12-07, measured
  but not shipped, see ``benchmarks/README.md``) and the exemplar guard (keyword rules
  first, then exemplar similarity; the same embedder): share of medical prompts let
  through, share of non-medical prompts refused (near-misses and injection attempts also
  on their own), and P/R/F1 with "medical" as the positive class.
- ``emergency`` / ``interaction`` / ``dose``: P/R/F1 of ``detect_emergencies``,
  ``check_interactions`` and ``check_doses`` over every prompt of the split (a prompt
  without the label is a negative), and emergencies found under the wrong category.
- ``errors``: every misclassified prompt with its id, kind and the decision's reason.
- ``latency``: median over ``--repeats`` of the mean ms per request of
  ``DomainClassifier.classify`` for each guard (embedder calls per request, no cache),
  and the ratios to the exemplar guard.

The figures embed every text of the split in one batched call per encoder first
(``CachedEmbed``); the vectors are those of one call per request up to float rounding.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medray.eval.classification import binary_prf, rate
from medray.safety import (
    DomainClassifier,
    SafetyPolicy,
    assess_request,
    check_doses,
    check_interactions,
    detect_emergencies,
)
from medray.safety.adapter import ViewEncoder
from medray.safety.domain import strip_injection
from medray.safety.guardset import GuardPrompt, load_guard_set
from medray.safety.head import DomainHead, views

CANDIDATE = (
    Path(__file__).resolve().parent / "results" / "guard-adapter-2026-12-07b" / "domain_head.json"
)


def emit(**row) -> None:
    print(json.dumps(row, ensure_ascii=False), flush=True)


def rounded(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def domain_figures(prompts: list[GuardPrompt], clf: DomainClassifier) -> tuple[dict, list]:
    reports = [assess_request(p.text, clf) for p in prompts]
    allowed = [not r.refused for r in reports]
    med = [a for a, p in zip(allowed, prompts, strict=True) if p.medical]
    other = [a for a, p in zip(allowed, prompts, strict=True) if not p.medical]

    def refused(kind: str) -> float:
        xs = [not a for a, p in zip(allowed, prompts, strict=True) if p.kind == kind]
        return round(rate(xs), 4) if xs else None

    figures = {
        "medical_allowed": round(rate(med), 4),
        "other_refused": round(1 - rate(other), 4),
        "near_miss_refused": refused("near_miss"),
        "injection_refused": refused("injection"),
        "n_medical": len(med),
        "n_other": len(other),
        **rounded(binary_prf([p.medical for p in prompts], allowed)),
    }
    errors = [
        {
            "id": p.id,
            "label": "medical" if p.medical else "other",
            "kind": p.kind,
            "text": p.text,
            "reason": r.domain.reason if r.domain else "",
        }
        for p, r, a in zip(prompts, reports, allowed, strict=True)
        if a != p.medical
    ]
    return figures, errors


def rule_figures(prompts: list[GuardPrompt]) -> list[tuple[str, dict, list]]:
    out = []
    found = [detect_emergencies(p.text) for p in prompts]
    em = rounded(binary_prf([bool(p.emergency) for p in prompts], [bool(f) for f in found]))
    em["wrong_category"] = sum(
        1 for p, f in zip(prompts, found, strict=True)
        if p.emergency and f and p.emergency not in {x.category for x in f}
    )  # fmt: skip
    em_err = [
        {
            "id": p.id,
            "label": p.emergency or "none",
            "found": [x.category for x in f],
            "text": p.text,
        }
        for p, f in zip(prompts, found, strict=True)
        if bool(p.emergency) != bool(f)
    ]
    out.append(("emergency", em, em_err))
    for name, check, label in (
        ("interaction", check_interactions, lambda p: p.interaction),
        ("dose", check_doses, lambda p: p.dose),
    ):
        hits = [check(p.text) for p in prompts]
        fig = rounded(binary_prf([label(p) for p in prompts], [bool(h) for h in hits]))
        err = [
            {"id": p.id, "label": label(p), "found": [h.message() for h in hs], "text": p.text}
            for p, hs in zip(prompts, hits, strict=True)
            if label(p) != bool(hs)
        ]
        out.append((name, fig, err))
    return out


def guards(embed, view_embeds: dict, heads: dict[str, DomainHead]) -> dict[str, DomainClassifier]:
    """The guards compared: each head (with its adapter's encoder, if any), exemplars."""
    out = {
        name: DomainClassifier(embed, SafetyPolicy(), h, view_embeds.get(name))
        for name, h in heads.items()
    }
    return out | {"exemplars": DomainClassifier(embed, SafetyPolicy(), None)}


class CachedEmbed:
    """An encoder with a cache, filled by one batched call for the whole split (the
    figures use the same vectors as one call per request; latency uses no cache).

    ``encode``: texts -> ``(n, dim)`` normalised vectors (the plain embedder or the head's
    ``ViewEncoder``)."""

    def __init__(self, encode) -> None:
        self.encode = encode
        self.cache: dict[str, np.ndarray] = {}

    def fill(self, texts: list[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            vecs = np.asarray(self.encode(todo))
            self.cache.update(zip(todo, vecs, strict=True))

    def __call__(self, texts) -> np.ndarray:
        self.fill(list(texts))
        return np.stack([self.cache[t] for t in texts])


def latency_ms(guards: dict[str, DomainClassifier], texts: list[str], repeats: int) -> dict:
    """Median over repeats of mean ms per request; the guards alternate within each repeat
    so that a change of machine load hits both alike."""
    runs: dict[str, list[float]] = {name: [] for name in guards}
    for _ in range(repeats):
        for name, clf in guards.items():
            t0 = time.perf_counter()
            for t in texts:
                clf.classify(t)
            runs[name].append((time.perf_counter() - t0) * 1000 / len(texts))
    return {name: statistics.median(v) for name, v in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Guard precision / recall on datasets/guard.")
    ap.add_argument("--split", choices=("heldout", "tune", "all"), default="heldout")
    ap.add_argument("--set", type=Path, default=None, help="guard.jsonl (default: datasets/guard)")
    ap.add_argument("--repeats", type=int, default=3, help="latency repeats (median)")
    ap.add_argument("--latency-prompts", type=int, default=100)
    ap.add_argument(
        "--candidate",
        type=Path,
        default=CANDIDATE,
        help="a head file to compare with the shipped one",
    )
    args = ap.parse_args(argv)
    prompts = load_guard_set(args.set, None if args.split == "all" else args.split)
    from medray.models import load_embedder

    model = load_embedder("minilm-l6")
    heads = {"head": DomainHead.load(), "candidate": DomainHead.load(args.candidate)}
    encoders = {k: ViewEncoder(model, h.adapter) for k, h in heads.items() if h.adapter}
    cached = CachedEmbed(lambda t: model.encode(t, normalize_embeddings=True, batch_size=64))
    cached_views = {k: CachedEmbed(e.encode) for k, e in encoders.items()}
    cleans = [c for c in (strip_injection(p.text)[0] for p in prompts) if c]
    for c in (cached, *cached_views.values()):
        c.fill([v for x in cleans for v in views(x)])
    head = heads["head"]
    emit(
        benchmark="guard", split=args.split, prompts=len(prompts),
        medical=sum(p.medical for p in prompts), head_threshold=head.threshold,
        head_trained_on=head.meta.get("trained_on"), head_cv=head.meta.get("chosen"),
        candidate=str(args.candidate), candidate_cv=heads["candidate"].meta.get("chosen"),
    )  # fmt: skip
    for name, clf in guards(cached, cached_views, heads).items():
        figures, errors = domain_figures(prompts, clf)
        emit(result="domain", guard=name, **figures)
        if name != "exemplars":
            emit(result="errors", check="domain", guard=name, n=len(errors), errors=errors)
    for name, fig, err in rule_figures(prompts):
        emit(result=name, **fig)
        emit(result="errors", check=name, n=len(err), errors=err)
    texts = [p.text for p in prompts[: args.latency_prompts]]

    def embed(batch):
        return model.encode(list(batch), normalize_embeddings=True)

    timed = guards(embed, encoders, heads)
    for clf in timed.values():
        clf.classify(texts[0])  # embeds the exemplars
    ms = latency_ms(timed, texts, args.repeats)
    emit(
        result="latency", prompts=len(texts), repeats=args.repeats,
        **{f"{k}_ms": round(v, 2) for k, v in ms.items()},
        **{f"ratio_{k}_over_exemplars": round(v / ms["exemplars"], 2) for k, v in ms.items()},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
