"""The domain head: a logistic layer on two views of a request's sentence embedding.

View 1 is the request (injection text removed) as the user wrote it; view 2 is the same
request with its clinical terms masked (:func:`medray.safety.terms.mask_medical_terms`), so
"As a radiologist, recommend a movie" shows what it asks once "radiologist" is gone. Both
are embedded by all-MiniLM-L6-v2 (preset ``minilm-l6``; a head file may name a LoRA
adapter, :mod:`medray.safety.adapter`, whose encoder then embeds the views) and
concatenated, followed by six evidence features (:data:`EXTRA`: keyword counts and
one-sidedness, best cosine similarity of the plain embedding of view 1 to the medical and
to the non-medical exemplar requests); the head returns P(medical). Weights, bias, the
decision threshold and the adapter folder's name live in ``domain_head.json``, written by
:mod:`medray.safety.train_head` from the tuning split of the guard set
(``datasets/guard``) only; the threshold was chosen there by grouped cross-validation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medray.safety.terms import keyword_evidence, mask_medical_terms

EmbedFn = Callable[[Sequence[str]], np.ndarray]

HEAD_PATH = Path(__file__).with_name("domain_head.json")
VIEWS = ("text", "masked")
EXTRA = ("kw_medical", "kw_other", "kw_medical_only", "kw_other_only", "sim_medical", "sim_other")


class HeadError(ValueError):
    """The head file is missing, malformed or made for another embedder size."""


def views(clean_text: str) -> tuple[str, str]:
    """The two texts the head embeds for one (injection-stripped) request."""
    return clean_text, mask_medical_terms(clean_text) or "."


def head_row(
    view_vectors: np.ndarray,
    medical_keywords: Sequence[str],
    other_keywords: Sequence[str],
    exemplars: tuple[np.ndarray, np.ndarray],
    plain: np.ndarray | None = None,
) -> np.ndarray:
    """One feature row: the two view vectors, then the :data:`EXTRA` evidence features.

    ``plain``: the plain embedder's vector of view 1, which the exemplars are compared
    with (None: ``view_vectors[0]``, for a head without an adapter)."""
    v = np.asarray(view_vectors, dtype=np.float64)
    p = v[0] if plain is None else np.asarray(plain, dtype=np.float64)
    n_med, n_other = len(medical_keywords), len(other_keywords)
    extra = [
        min(n_med, 3) / 3,
        min(n_other, 3) / 3,
        float(n_med > 0 and n_other == 0),
        float(n_other > 0 and n_med == 0),
        float(np.max(exemplars[0] @ p)),
        float(np.max(exemplars[1] @ p)),
    ]
    return np.concatenate([v.reshape(-1), extra])


def features(
    texts: Sequence[str],
    embed: EmbedFn,
    exemplars: tuple[np.ndarray, np.ndarray],
    view_embed: EmbedFn | None = None,
) -> np.ndarray:
    """``(n, 2 * dim + 6)`` feature rows for ``n`` injection-stripped requests.

    ``embed`` is the plain embedder; ``view_embed`` (the head's adapted encoder) embeds
    the views when given, else ``embed`` does (one call for all views)."""
    pairs = [v for t in texts for v in views(t)]
    emb = np.asarray((view_embed or embed)(pairs), dtype=np.float32).reshape(
        len(texts), len(VIEWS), -1
    )
    plain = np.asarray(embed(list(texts)), dtype=np.float32) if view_embed else emb[:, 0]
    return np.stack(
        [
            head_row(e, *keyword_evidence(t), exemplars, p)
            for t, e, p in zip(texts, emb, plain, strict=True)
        ]
    )


def logistic(x: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """``sigmoid(x . weights + bias)`` in float64 for feature rows ``x``."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(x, dtype=np.float64) @ weights + bias)))


@dataclass(frozen=True)
class DomainHead:
    """Logistic head: ``P(medical) = sigmoid(w . x + b)``; medical when ``>= threshold``.

    Attributes:
        weights: ``(2 * dim + 6,)`` coefficients over the views and :data:`EXTRA`.
        bias: intercept.
        threshold: decision threshold on P(medical), chosen on the tuning split.
        meta: how it was trained (embedder, recipe, cross-validated figures, set digest).
        adapter: the LoRA adapter folder of the view encoder (:mod:`medray.safety.adapter`),
            None for a head on the plain embedder.
    """

    weights: np.ndarray
    bias: float
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    adapter: Path | None = None

    @property
    def dim(self) -> int:
        return (int(self.weights.shape[0]) - len(EXTRA)) // len(VIEWS)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """P(medical) for feature rows ``x`` of shape ``(n, 2 * dim + 6)``."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] != self.weights.shape[0]:
            raise HeadError(
                f"features have {x.shape[1]} columns, the head expects {self.weights.shape[0]}: "
                "was it trained with another embedder? Re-run python -m medray.safety.train_head"
            )
        return logistic(x, self.weights, self.bias)

    def to_dict(self) -> dict[str, Any]:
        return {
            "views": list(VIEWS),
            "extra": list(EXTRA),
            "adapter": self.adapter.name if self.adapter else None,
            "threshold": round(float(self.threshold), 6),
            "bias": round(float(self.bias), 6),
            "weights": [round(float(w), 6) for w in self.weights],
            "meta": self.meta,
        }

    def save(self, path: str | Path = HEAD_PATH) -> Path:
        """Write the head file; its adapter folder must already lie beside it."""
        path = Path(path)
        if self.adapter is not None and self.adapter.parent.resolve() != path.parent.resolve():
            raise HeadError(f"the adapter {self.adapter} must lie beside the head file {path}")
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path = HEAD_PATH) -> DomainHead:
        path = Path(path)
        if not path.is_file():
            raise HeadError(f"no domain head at {path}: run python -m medray.safety.train_head")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            head = cls(
                np.asarray(d["weights"], dtype=np.float64),
                float(d["bias"]),
                float(d["threshold"]),
                dict(d.get("meta", {})),
                path.parent / d["adapter"] if d.get("adapter") else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise HeadError(f"{path}: not a domain head file ({e})") from e
        if (
            list(d.get("views", [])) != list(VIEWS)
            or list(d.get("extra", [])) != list(EXTRA)
            or head.weights.ndim != 1
        ):
            raise HeadError(f"{path}: expected views {list(VIEWS)}, extra {list(EXTRA)}")
        if head.adapter is not None and not (head.adapter / "adapter_config.json").is_file():
            raise HeadError(
                f"{path}: its adapter folder {head.adapter} is missing or has no "
                "adapter_config.json: re-run python -m medray.safety.train_head"
            )
        if not 0.0 < head.threshold < 1.0:
            raise HeadError(f"{path}: threshold must lie in (0, 1), got {head.threshold}")
        return head
