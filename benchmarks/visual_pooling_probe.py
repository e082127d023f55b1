"""Diagnostic: which image facts can the tiny reasoner's LM read without learned attention?

    python -m benchmarks.visual_pooling_probe --data $MEDRAY_HOME/data/vqa-synth \
        --model tiny-qwen2-vl

At initialisation the language model's attention is close to uniform, so what reaches the
answer position from the image is about the *mean* of the visual tokens. A fact a linear
probe reads from the mean-pooled tokens of the untrained vision tower has a first-order
gradient path from the answer to the image from step one; a fact only the concatenated
(position-specific) tokens carry needs the LM to learn content-selective attention, or the
tower to learn a position-invariant detector, before any gradient says so: a plateau.

For each fact (lesion presence on CT/MRI slices, CT vs MRI, each chest X-ray finding) this
fits logistic regressions on train-split images and prints held-out accuracy from the
visual tokens concatenated, mean-pooled and max-pooled, next to the majority rate. Labels
come from the rows' own answers (closed presence questions; the open modality question).
No training of the model; a minute on a CPU.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import pandas as pd
import torch

from benchmarks.reasoner_closed_probe import load_split

# fact name -> (pandas query selecting one row per image and fact, label from the row)
FACTS = {
    "lesion (CT/MRI)": (
        "content_type in ('pres', 'abnormality') and answer_type == 'closed' and organ != 'chest'",
        lambda r: r.answer == "Yes",
    ),
    "CT vs MRI": (
        "content_type == 'modality' and answer_type == 'open' and organ != 'chest'",
        lambda r: r.answer == "CT",
    ),
}
CXR_FINDINGS = {
    "effusion": ("effusion", "pleural space"),
    "cardiomegaly": ("cardiomegaly", "heart enlarged"),
    "nodule": ("nodule",),
    "consolidation": ("consolidation",),
    "pneumothorax": ("pneumothorax", "air in the pleural"),
}


def select(df: pd.DataFrame, fact: str) -> tuple[pd.DataFrame, np.ndarray]:
    if fact in FACTS:
        query, label = FACTS[fact]
        rows = df.query(query)
        y = np.array([label(r) for r in rows.itertuples()])
    else:
        keys = CXR_FINDINGS[fact]
        q = df.question.str.lower()
        rows = df[
            (df.organ == "chest")
            & (df.content_type == "pres")
            & q.apply(lambda s: any(k in s for k in keys))
        ]
        y = (rows.answer == "Yes").to_numpy()
    keep = ~rows.image_sha256.duplicated().to_numpy()
    return rows[keep], y[keep]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a jobs.preprocess output folder")
    p.add_argument("--model", default="tiny-qwen2-vl", help="VLM folder or tiny preset name")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medray.models import resolve

    torch.set_num_threads(a.threads)
    location = resolve(a.model, "vlm")
    proc = AutoProcessor.from_pretrained(location)
    model = AutoModelForImageTextToText.from_pretrained(location, dtype=torch.float32).eval()

    cache: dict[str, np.ndarray] = {}  # image sha256 -> its visual tokens (facts share images)

    def tokens(df: pd.DataFrame) -> np.ndarray:
        todo = df[~df.image_sha256.isin(cache)]
        for i in range(0, len(todo), 32):
            chunk = todo.iloc[i : i + 32]
            images = [Image.open(io.BytesIO(b)).convert("RGB") for b in chunk.image]
            x = proc.image_processor(images=images, return_tensors="pt")
            with torch.no_grad():
                e = model.model.visual(x["pixel_values"], grid_thw=x["image_grid_thw"])
            e = getattr(e, "pooler_output", e)
            per_image = e.reshape(len(images), -1, e.shape[-1]).numpy()
            cache.update(zip(chunk.image_sha256, per_image, strict=True))
        return np.stack([cache[sha] for sha in df.image_sha256])

    train, test = load_split(a.data, "train", ""), load_split(a.data, "test", "")
    pools = {
        "concat": lambda f: f.reshape(len(f), -1),
        "mean": lambda f: f.mean(1),
        "max": lambda f: f.max(1),
    }
    print(
        f"{'fact':<18} {'n train/test':>12} {'majority':>8} " + " ".join(f"{k:>7}" for k in pools)
    )
    for fact in [*FACTS, *CXR_FINDINGS]:
        (tr, ytr), (te, yte) = select(train, fact), select(test, fact)
        ftr, fte = tokens(tr), tokens(te)
        accs = []
        for pool in pools.values():
            clf = LogisticRegression(max_iter=3000).fit(pool(ftr), ytr)
            accs.append(clf.score(pool(fte), yte))
        majority = max(yte.mean(), 1 - yte.mean())
        print(
            f"{fact:<18} {f'{len(tr)}/{len(te)}':>12} {majority:>8.2f} "
            + " ".join(f"{x:>7.2f}" for x in accs),
            flush=True,
        )


if __name__ == "__main__":
    main()
