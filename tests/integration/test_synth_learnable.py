"""Synthetic chest X-rays are learnable from pixels, and not without them.

A small CNN sees the generated MIMIC-CXR-layout images (read back through the same
reader as real data, downscaled to 112x112 like the tiny VLM's input, then 56x56) and
answers "is there <finding>?" for the five findings. Accuracy is measured on balanced
questions (balanced accuracy: the mean of the yes- and no-question accuracies), where a
model that ignores the image scores 0.5 at best. The same network trained on blank
images is the control.

The same holds for the CT/MRI lesions of the VQA-RAD layout ("does the picture contain a
lesion?"), read back through the VQA-RAD reader at 112x112: a few epochs suffice, since a
ring-enhancing lesion looks like no normal structure (uniform lesions, as dark or bright as
the ventricles and bowel gas, needed 15-20 epochs of this network to pass 0.85).
"""

from __future__ import annotations

from collections import Counter
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image

from medray.data.config import SourceSpec, SplitSettings
from medray.data.readers import read_source
from medray.data.synth import generate
from medray.data.synth.text import CHEXPERT

pytestmark = pytest.mark.integration

FINDINGS = sorted(CHEXPERT)
N_TRAIN, N_TEST = 600, 200


def load(tmp_path):
    root = tmp_path / "mimic"
    generate("mimic-cxr", root, n=N_TRAIN + N_TEST, seed=5, image_size=224, workers=2)
    recs = list(
        read_source(
            SourceSpec(kind="mimic-cxr", path=str(root)), str(root), SplitSettings(), Counter()
        )
    )
    xs, ys = [], []
    for r in recs:
        img = Image.open(BytesIO((root / r["image"]).read_bytes())).convert("L")
        img = img.resize((112, 112), Image.BILINEAR).resize((56, 56), Image.BILINEAR)
        xs.append(np.asarray(img, np.float32) / 255.0)
        ys.append([CHEXPERT[f] in r["labels"] for f in FINDINGS])
    x = torch.tensor(np.stack(xs))[:, None]
    return (x - x.mean()) / x.std(), torch.tensor(ys, dtype=torch.float32)


def train_and_score(x, y, epochs: int) -> dict[str, float]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, len(FINDINGS)),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 2e-3, weight_decay=1e-4)
    xtr, ytr = x[:N_TRAIN], y[:N_TRAIN]
    pos_weight = (1 - ytr.mean(0)) / ytr.mean(0).clamp(min=1e-3)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(N_TRAIN).split(32):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(xtr[idx]), ytr[idx], pos_weight=pos_weight
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(x[N_TRAIN:]) > 0
    truth = y[N_TRAIN:] > 0.5
    scores = {}
    for j, f in enumerate(FINDINGS):
        yes, no = truth[:, j], ~truth[:, j]
        scores[f] = 0.5 * (
            pred[yes, j].float().mean().item() + (~pred[no, j]).float().mean().item()
        )
    return scores


def test_a_small_cnn_learns_findings_from_pixels_and_not_from_blank_images(tmp_path):
    torch.set_num_threads(2)
    x, y = load(tmp_path)
    assert y[N_TRAIN:].sum(0).min() >= 10  # every finding present in the held-out images
    real = train_and_score(x, y, epochs=8)
    blank = train_and_score(torch.zeros_like(x), y, epochs=3)
    assert min(real.values()) >= 0.8 and np.mean(list(real.values())) >= 0.9, real
    assert max(blank.values()) <= 0.6, blank


def load_slices(tmp_path, n_images: int):
    """VQA-RAD CT/MRI slices at 112x112 (the VLM's input) and whether each has a lesion."""
    root = tmp_path / "vqa-rad"
    generate("vqa-rad", root, n=n_images, seed=3, image_size=112, workers=2)
    recs = read_source(
        SourceSpec(kind="vqa-rad", path=str(root)), str(root), SplitSettings(), Counter()
    )
    xs, ys, seen = [], [], set()
    for r in recs:
        if r["organ"] == "chest" or r["content_type"] != "pres" or r["image"] in seen:
            continue
        seen.add(r["image"])
        img = Image.open(BytesIO((root / r["image"]).read_bytes())).convert("L")
        xs.append(np.asarray(img.resize((56, 56), Image.BILINEAR), np.float32) / 255.0)
        ys.append(r["answer"] == "Yes")
    x = torch.tensor(np.stack(xs))[:, None]
    return (x - x.mean()) / x.std(), torch.tensor(ys, dtype=torch.float32)


def lesion_accuracy(x, y, n_train: int, epochs: int) -> float:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(16, 1),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(n_train).split(32):
            logits = net(x[:n_train][idx])[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[:n_train][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = net(x[n_train:])[:, 0] > 0
    truth = y[n_train:] > 0.5
    return 0.5 * (pred[truth].float().mean().item() + (~pred[~truth]).float().mean().item())


def test_a_small_cnn_sees_ct_mri_lesions_at_112px_within_a_few_epochs(tmp_path):
    torch.set_num_threads(2)
    x, y = load_slices(tmp_path, 600)
    n_train = int(0.75 * len(y))
    assert len(y) >= 300 and 0.35 < y.mean().item() < 0.65
    real = lesion_accuracy(x, y, n_train, epochs=6)
    blank = lesion_accuracy(torch.zeros_like(x), y, n_train, epochs=3)
    assert real >= 0.9, real
    assert blank <= 0.6, blank
