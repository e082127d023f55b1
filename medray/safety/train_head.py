"""Train the domain head (and its LoRA adapter) on the tuning split of the guard set.

    python -m medray.safety.train_head                  # writes medray/safety/domain_head.json
    python -m medray.safety.train_head --recipe adapter --out /tmp/cand/domain_head.json
                                                        # + /tmp/cand/domain_adapter/

Only ``split == "tune"`` prompts are read; each gets ``--augment`` seeded wraps
(:mod:`medray.safety.augment`: clinical framing around non-medical requests, everyday
context around medical ones) in its own family. Two recipes:

- ``plain`` (default, shipped): logistic regression on the frozen embedder's features.
  ``C`` and the threshold are chosen by cross-validation grouped by prompt family: for each
  ``C`` the out-of-fold P(medical) of the original prompts (wraps only train) gives the
  threshold that keeps ``--target-recall`` of the medical prompts, and the ``C`` that
  refuses most non-medical prompts at that threshold wins.
- ``adapter`` (a candidate, not shipped: on the held-out split it lets through fewer
  medical prompts than the plain head, see ``benchmarks/README.md``): a LoRA adapter on
  all-MiniLM-L6-v2 (:mod:`medray.safety.adapter`) trained jointly with the logistic layer (class-weighted
  binary cross-entropy, AdamW, ``--epochs`` over the tuning prompts and their wraps, seeded).
  The threshold comes from the same grouped cross-validation. One recipe, no search: the
  cross-validated figures are what it gives.

The final head is fitted on the whole tuning split. The held-out split is never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medray.safety.augment import augment
from medray.safety.domain import embed_exemplars, strip_injection
from medray.safety.guardset import load_guard_set
from medray.safety.head import HEAD_PATH, DomainHead, features
from medray.safety.train_adapter import AdapterRecipe, train_adapter

log = logging.getLogger(__name__)

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)


def pick_threshold(p_medical: np.ndarray, target_recall: float) -> float:
    """The highest threshold that still lets through ``target_recall`` of these scores."""
    s = np.sort(p_medical)
    k = int(np.floor((1.0 - target_recall) * len(s)))
    return float(s[min(k, len(s) - 1)])


def threshold_figures(p_medical: np.ndarray, y: np.ndarray, target_recall: float) -> dict:
    """The threshold that keeps ``target_recall`` of the medical scores (``y == 1``) and
    the shares of medical prompts allowed and of the others refused at it."""
    t = pick_threshold(p_medical[y == 1], target_recall)
    return {
        "threshold": round(t, 6),
        "cv_medical_allowed": round(float((p_medical[y == 1] >= t).mean()), 4),
        "cv_other_refused": round(float((p_medical[y == 0] < t).mean()), 4),
    }


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
        rows.append({"C": c, **threshold_figures(oof[original], yo, target_recall)})
        log.info("C=%g: %s", c, rows[-1])
    return rows


@dataclass
class TuningData:
    """The tuning split with its wraps: injection-stripped texts, labels, families, which
    rows are original prompts, and the plain embedder's feature rows."""

    texts: list[str]
    y: np.ndarray
    groups: np.ndarray
    original: np.ndarray
    x_plain: np.ndarray
    meta: dict


def tuning_data(set_path: Path | None, augment_per_prompt: int, model, preset: str) -> TuningData:
    prompts = load_guard_set(set_path, split="tune")
    texts, labels, fams = augment(
        [p.text for p in prompts],
        [p.medical for p in prompts],
        [p.family for p in prompts],
        per_prompt=augment_per_prompt,
    )
    texts = [strip_injection(t)[0] or t for t in texts]

    def embed(batch):
        return model.encode(list(batch), normalize_embeddings=True, batch_size=64)

    y = np.array(labels, dtype=int)
    original = np.arange(len(y)) < len(prompts)
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
    }
    x = features(texts, embed, embed_exemplars(embed))
    return TuningData(texts, y, np.array(fams), original, x, meta)


def train_plain(data: TuningData, folds: int, target_recall: float) -> DomainHead:
    """Logistic regression on the frozen embedder's features (``C`` by grouped CV)."""
    from sklearn.linear_model import LogisticRegression

    x, y = data.x_plain, data.y
    cv = cross_validate(x, y, data.groups, folds, target_recall, data.original)
    best = max(cv, key=lambda r: (r["cv_other_refused"], -r["C"]))
    clf = LogisticRegression(C=best["C"], max_iter=5000, class_weight="balanced").fit(x, y)
    meta = {**data.meta, "recipe": "plain", "folds": folds, "target_recall": target_recall}
    meta |= {"chosen": best, "cv": cv}
    return DomainHead(
        clf.coef_[0].astype(np.float64), float(clf.intercept_[0]), best["threshold"], meta
    )


def train(
    set_path: Path | None,
    folds: int,
    target_recall: float,
    augment_per_prompt: int = 1,
    preset: str = "minilm-l6",
    recipe: str = "plain",
    out: Path = HEAD_PATH,
    recipe_args: AdapterRecipe | None = None,
) -> DomainHead:
    """Train a head by ``recipe`` on the tuning split; an adapter is saved beside ``out``."""
    from medray.models import load_embedder

    model = load_embedder(preset)
    data = tuning_data(set_path, augment_per_prompt, model, preset)
    if recipe == "plain":
        return train_plain(data, folds, target_recall)
    return train_adapter(model, data, folds, target_recall, out, recipe_args or AdapterRecipe())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Train the domain head on the guard set's tuning split."
    )
    ap.add_argument("--set", type=Path, default=None, help="guard.jsonl (default: datasets/guard)")
    ap.add_argument("--out", type=Path, default=HEAD_PATH)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--target-recall", type=float, default=0.99)
    ap.add_argument("--augment", type=int, default=1, help="wraps per tuning prompt")
    ap.add_argument("--recipe", choices=("plain", "adapter"), default="plain")
    d = AdapterRecipe()
    ap.add_argument("--epochs", type=int, default=d.epochs, help="adapter recipe")
    ap.add_argument("--rank", type=int, default=d.rank, help="adapter recipe: LoRA rank")
    ap.add_argument("--lr", type=float, default=d.lr, help="adapter recipe: LoRA learning rate")
    ap.add_argument("--seed", type=int, default=d.seed, help="adapter recipe")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = AdapterRecipe(epochs=args.epochs, rank=args.rank, lr=args.lr, seed=args.seed)
    head = train(
        args.set, args.folds, args.target_recall, args.augment, recipe=args.recipe,
        out=args.out, recipe_args=recipe,
    )  # fmt: skip
    head.save(args.out)
    print(json.dumps({"written": str(args.out), **head.meta["chosen"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
