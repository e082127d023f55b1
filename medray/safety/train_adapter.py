"""The domain head's adapter recipe: LoRA on the sentence embedder + the logistic layer.

Used by :mod:`medray.safety.train_head` (``--recipe adapter``). The view encoder
(:class:`medray.safety.adapter.ViewEncoder`) embeds both views of each request; the layer
reads them with the plain embedder's six evidence features (:data:`medray.safety.head.EXTRA`,
fixed during training) and both are trained with class-weighted binary cross-entropy.
The threshold is the one grouped cross-validation gives (out-of-fold scores of the
original prompts, wraps only train); the head is then fitted on the whole tuning split.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medray.safety.adapter import ViewEncoder
from medray.safety.head import EXTRA, DomainHead, logistic, views

if TYPE_CHECKING:
    from medray.safety.train_head import TuningData

log = logging.getLogger(__name__)
ADAPTER_DIRNAME = "domain_adapter"


@dataclass(frozen=True)
class AdapterRecipe:
    """Training settings (fixed before the cross-validated figure was looked at)."""

    rank: int = 8
    epochs: int = 4
    lr: float = 5e-4
    head_lr: float = 1e-2
    batch_size: int = 32
    weight_decay: float = 0.01
    seed: int = 0


@dataclass
class FittedHead:
    encoder: ViewEncoder
    weights: np.ndarray
    bias: float

    def probability(self, texts: list[str], extras: np.ndarray) -> np.ndarray:
        """P(medical) of injection-stripped requests with their evidence features."""
        v = self.encoder.encode([x for t in texts for x in views(t)]).reshape(len(texts), -1)
        return logistic(np.concatenate([v, extras], 1), self.weights, self.bias)


def fit(
    model, texts: list[str], y: np.ndarray, extras: np.ndarray, recipe: AdapterRecipe
) -> FittedHead:
    """Train a new adapter and the layer on these rows (seeded, shuffled each epoch)."""
    import torch

    encoder = ViewEncoder(model, rank=recipe.rank, seed=recipe.seed)
    layer = torch.nn.Linear(len(views("x")) * encoder.dim + len(EXTRA), 1)
    opt = torch.optim.AdamW(
        [
            {"params": encoder.trainable_parameters(), "lr": recipe.lr},
            {"params": layer.parameters(), "lr": recipe.head_lr},
        ],
        weight_decay=recipe.weight_decay,
    )
    pos = float(y.mean())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / max(pos, 1e-6)))
    target = torch.as_tensor(y, dtype=torch.float32)
    extra_t = torch.as_tensor(extras, dtype=torch.float32)
    rng = np.random.default_rng(recipe.seed)
    encoder.model.train()
    for _ in range(recipe.epochs):
        order = rng.permutation(len(texts))
        for k in range(0, len(order), recipe.batch_size):
            idx = order[k : k + recipe.batch_size]
            v = encoder.forward([x for i in idx for x in views(texts[i])]).reshape(len(idx), -1)
            logits = layer(torch.cat([v, extra_t[idx]], 1)).squeeze(-1)
            loss = loss_fn(logits, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    encoder.model.eval()
    w = layer.weight.detach().double().numpy()[0]
    return FittedHead(encoder, w, float(layer.bias.detach()[0]))


def cross_validated_scores(
    model, data: TuningData, folds: int, recipe: AdapterRecipe
) -> np.ndarray:
    """Out-of-fold P(medical) of the original prompts (GroupKFold over families)."""
    from sklearn.model_selection import GroupKFold

    extras = data.x_plain[:, -len(EXTRA) :]
    oof = np.full(len(data.y), np.nan)
    t0 = time.monotonic()
    for f, (tr, te) in enumerate(GroupKFold(folds).split(data.texts, data.y, data.groups)):
        te = te[data.original[te]]
        fitted = fit(model, [data.texts[i] for i in tr], data.y[tr], extras[tr], recipe)
        oof[te] = fitted.probability([data.texts[i] for i in te], extras[te])
        log.info("fold %d/%d done (%.0f s)", f + 1, folds, time.monotonic() - t0)
    return oof[data.original]


def train_adapter(
    model, data: TuningData, folds: int, target_recall: float, out: Path, recipe: AdapterRecipe
) -> DomainHead:
    """Cross-validate for the threshold, fit on the whole split, save the adapter beside
    ``out`` (``domain_adapter/``) and return the head that names it."""
    from medray.safety.train_head import threshold_figures

    oof = cross_validated_scores(model, data, folds, recipe)
    cv = threshold_figures(oof, data.y[data.original], target_recall)
    log.info("cross-validated: %s", cv)
    fitted = fit(model, data.texts, data.y, data.x_plain[:, -len(EXTRA) :], recipe)
    folder = Path(out).parent / ADAPTER_DIRNAME
    if folder.exists():
        shutil.rmtree(folder)
    fitted.encoder.save(folder)
    meta = {**data.meta, "recipe": "adapter", "adapter": asdict(recipe), "folds": folds}
    meta |= {"target_recall": target_recall, "chosen": cv}
    return DomainHead(fitted.weights, fitted.bias, cv["threshold"], meta, folder)
