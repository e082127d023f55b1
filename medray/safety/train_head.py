"""Train the domain head on the tuning split of the guard set.

    python -m medray.safety.train_head                  # writes medray/safety/domain_head.json
    python -m medray.safety.train_head --out /tmp/head.json --folds 5

Only ``split == "tune"`` prompts are read; each gets ``--augment`` seeded wraps
(:mod:`medray.safety.augment`: clinical framing around non-medical requests, everyday
context around medical ones) in its own family. Regularisation ``C`` and the decision threshold
are chosen by grouped cross-validation over prompt families (no family is in a fold's
training and test part at once; wraps train, only original prompts are scored): for each
``C`` the out-of-fold probabilities give the
threshold that keeps at least ``--target-recall`` of the medical prompts, and the ``C``
that refuses most non-medical prompts at that threshold wins. The final head is fitted on
the whole tuning split. The held-out split is never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np

from medray.safety.augment import augment
from medray.safety.domain import embed_exemplars, strip_injection
from medray.safety.guardset import load_guard_set
from medray.safety.head import HEAD_PATH, DomainHead, features

log = logging.getLogger(__name__)

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)


def pick_threshold(p_medical: np.ndarray, target_recall: float) -> float:
    """The highest threshold that still lets through ``target_recall`` of these scores."""
    s = np.sort(p_medical)
    k = int(np.floor((1.0 - target_recall) * len(s)))
    return float(s[min(k, len(s) - 1)])


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    folds: int,
    target_recall: float,
    original: np.ndarray | None = None,
) -> list[dict]:
    """Grouped K-fold over ``C_GRID``: threshold, medical recall and refusal per C.

    ``original`` marks the rows that are scored (augmented rows only train).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    original = np.ones(len(y), dtype=bool) if original is None else original
    yo = y[original]
    rows = []
    for c in C_GRID:
        oof = np.full(len(y), np.nan)
        for tr, te in GroupKFold(folds).split(x, y, groups):
            te = te[original[te]]
            clf = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
            oof[te] = clf.fit(x[tr], y[tr]).predict_proba(x[te])[:, 1]
        oof = oof[original]
        t = pick_threshold(oof[yo == 1], target_recall)
        rows.append(
            {
                "C": c,
                "threshold": round(t, 6),
                "cv_medical_allowed": round(float((oof[yo == 1] >= t).mean()), 4),
                "cv_other_refused": round(float((oof[yo == 0] < t).mean()), 4),
            }
        )
        log.info("C=%g: %s", c, rows[-1])
    return rows


def train(
    set_path: Path | None,
    folds: int,
    target_recall: float,
    augment_per_prompt: int = 1,
    preset: str = "minilm-l6",
) -> DomainHead:
    from sklearn.linear_model import LogisticRegression

    from medray.models import load_embedder

    prompts = load_guard_set(set_path, split="tune")
    texts, labels, fams = augment(
        [p.text for p in prompts],
        [p.medical for p in prompts],
        [p.family for p in prompts],
        per_prompt=augment_per_prompt,
    )
    model = load_embedder(preset)

    def embed(batch):
        return model.encode(list(batch), normalize_embeddings=True, batch_size=64)

    x = features([strip_injection(t)[0] or t for t in texts], embed, embed_exemplars(embed))
    y = np.array(labels, dtype=int)
    groups = np.array(fams)
    original = np.arange(len(y)) < len(prompts)
    cv = cross_validate(x, y, groups, folds, target_recall, original)
    best = max(cv, key=lambda r: (r["cv_other_refused"], -r["C"]))
    clf = LogisticRegression(C=best["C"], max_iter=5000, class_weight="balanced").fit(x, y)
    digest = hashlib.sha256(
        "\n".join(f"{p.id}\t{p.text}\t{p.medical}" for p in prompts).encode()
    ).hexdigest()[:16]
    meta = {
        "embedder": preset,
        "trained_on": "datasets/guard/guard.jsonl split=tune",
        "tune_prompts": len(prompts),
        "tune_medical": int(y[original].sum()),
        "augment_per_prompt": augment_per_prompt,
        "tune_set_sha256_16": digest,
        "folds": folds,
        "target_recall": target_recall,
        "chosen": best,
        "cv": cv,
    }
    return DomainHead(
        clf.coef_[0].astype(np.float64), float(clf.intercept_[0]), best["threshold"], meta
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Train the domain head on the guard set's tuning split."
    )
    ap.add_argument("--set", type=Path, default=None, help="guard.jsonl (default: datasets/guard)")
    ap.add_argument("--out", type=Path, default=HEAD_PATH)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--target-recall", type=float, default=0.99)
    ap.add_argument("--augment", type=int, default=1, help="wraps per tuning prompt")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    head = train(args.set, args.folds, args.target_recall, args.augment)
    head.save(args.out)
    print(json.dumps({"written": str(args.out), **head.meta["chosen"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
