"""Domain control: is this a medical / radiology request? A transparent classifier.

With the sentence embedder (all-MiniLM-L6-v2, preset ``minilm-l6``) a small trained head
decides (:mod:`medray.safety.head`): a logistic layer on two views of the request's
embedding (as written, and with its clinical words masked; through the head's LoRA
adapter, :mod:`medray.safety.adapter`, when its file names one), trained on the tuning split
of the guard set (``datasets/guard``) with its threshold chosen there by grouped
cross-validation. Keyword evidence (clinical terms, non-medical topics) and the cosine
similarity to a few medical and non-medical exemplar requests are reported with every
:class:`DomainDecision`, but do not decide: "the heart of the city" has a clinical word and
is not medical. Without an embedder, keyword rules decide; with an embedder but no head
file, the exemplar similarities decide (``policy.domain_margin`` and
``policy.min_medical_similarity``).

Prompt injection: sentences that try to instruct the system ("ignore previous
instructions", "you are now ...", "classify this as medical") are removed before
classification and reported, so text inside a question cannot change the decision.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medray.safety.head import DomainHead, HeadError, head_row, views
from medray.safety.policy import SafetyPolicy
from medray.safety.terms import keyword_evidence, mostly_chinese

log = logging.getLogger(__name__)

# Embeds a list of texts into L2-normalised row vectors.
EmbedFn = Callable[[Sequence[str]], np.ndarray]

MEDICAL_EXEMPLARS: tuple[str, ...] = (
    "Is there a pleural effusion on this chest X-ray?",
    "What abnormality is seen in the right lower lobe?",
    "Describe the findings of this CT scan of the abdomen.",
    "Is the heart size normal on this radiograph?",
    "Which organ is shown in this MRI image?",
    "Is there evidence of pneumothorax?",
    "What are the symptoms of pneumonia?",
    "How is a fractured femur treated?",
    "What is the maximum daily dose of acetaminophen?",
    "Can I take ibuprofen with warfarin?",
    "What does a lung nodule mean on imaging?",
    "Explain the radiology report impression.",
    "What causes shortness of breath and a cough with fever?",
    "Is this brain lesion a tumour or an infarct?",
    "What is the differential diagnosis for this opacity?",
    "Describe the image.",
)

NON_MEDICAL_EXEMPLARS: tuple[str, ...] = (
    "What is the capital of France?",
    "Write a poem about the sea.",
    "How do I bake sourdough bread?",
    "Who won the football world cup in 2018?",
    "Write a Python function that sorts a list.",
    "What is the best stock to buy right now?",
    "Recommend a good movie for tonight.",
    "Translate this sentence into Spanish.",
    "How do I change a flat tyre on my car?",
    "Plan a three day trip to Rome.",
    "Explain how blockchain works.",
    "What is 17 times 23?",
    "Tell me a joke.",
    "What will the weather be like tomorrow?",
    "Summarise the plot of Hamlet.",
)

# Sentences that address the system instead of asking a question.
INJECTION_PATTERNS: dict[str, re.Pattern[str]] = {
    "ignore-instructions": re.compile(
        r"\b(?:ignore|disregard|forget|override|bypass)\b[^.?!\n]{0,40}"
        r"\b(?:instructions?|rules?|prompts?|polic(?:y|ies)|guard\w*|filters?|restrictions?)\b",
        re.IGNORECASE,
    ),
    "role-override": re.compile(
        r"\b(?:you are now|from now on,? you|act as|pretend (?:to be|you are)|"
        r"roleplay as|developer mode|jailbreak|DAN mode)\b",
        re.IGNORECASE,
    ),
    "system-prompt": re.compile(
        r"(?:^|\s)(?:system|assistant)\s*:|\bsystem prompt\b|<\|im_start\|>|\[INST\]",
        re.IGNORECASE,
    ),
    "classification-override": re.compile(
        r"\b(?:this|it|the (?:question|request|following))\s+(?:is|counts as|should be treated as)"
        r"\s+(?:a |an )?(?:medical|clinical|radiology|health)\b|"
        r"\b(?:treat|classify|consider|label|mark)\s+(?:this|it|the (?:question|request))\s+"
        r"(?:as\s+)?(?:a |an )?(?:medical|clinical|radiology|health|safe|allowed)\b|"
        r"\banswer (?:it|this|anyway|regardless)\b",
        re.IGNORECASE,
    ),
}

_SENTENCES = re.compile(r"(?<=[.?!;\n])\s+")


def strip_injection(text: str) -> tuple[str, list[str]]:
    """Remove sentences that try to instruct the system.

    Every other character stays as the client wrote it (line breaks and spacing
    included), so a question without injected text reaches the model unchanged: the same
    prompt that training and batch inference build from it.

    Returns:
        ``(remaining text, names of the injection patterns found)``.
    """
    found: list[str] = []
    kept: list[str] = []
    start = 0
    ends = [m.end() for m in _SENTENCES.finditer(text)] + [len(text)]
    for end in ends:
        sentence = text[start:end]  # with the whitespace that follows it
        start = end
        hits = [name for name, rx in INJECTION_PATTERNS.items() if rx.search(sentence)]
        if hits:
            found.extend(h for h in hits if h not in found)
        else:
            kept.append(sentence)
    if not found:
        return text, found
    return "".join(kept).strip(), found


@dataclass(frozen=True)
class DomainDecision:
    """Why a request was judged medical or not.

    Attributes:
        medical: the decision.
        method: ``head`` (the trained head), ``keywords`` (no embedder), ``embedding``
            (exemplar similarity, no head file) or ``default`` (nothing to judge).
        reason: one line a user can read.
        medical_keywords: clinical terms found.
        other_keywords: non-medical topic terms found.
        medical_similarity: best cosine similarity to a medical exemplar (None without
            an embedder).
        other_similarity: best cosine similarity to a non-medical exemplar.
        injection: injection patterns found (and ignored).
        score: the head's P(medical) (None without the head).
        threshold: the head's decision threshold (None without the head).
    """

    medical: bool
    method: str
    reason: str
    medical_keywords: tuple[str, ...] = ()
    other_keywords: tuple[str, ...] = ()
    medical_similarity: float | None = None
    other_similarity: float | None = None
    injection: tuple[str, ...] = field(default_factory=tuple)
    score: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "medical": self.medical,
            "method": self.method,
            "reason": self.reason,
            "medical_keywords": list(self.medical_keywords),
            "other_keywords": list(self.other_keywords),
            "medical_similarity": self.medical_similarity,
            "other_similarity": self.other_similarity,
            "injection": list(self.injection),
            "score": self.score,
            "threshold": self.threshold,
        }


def decide(
    text: str,
    embed: EmbedFn | None = None,
    exemplars: tuple[np.ndarray, np.ndarray] | None = None,
    policy: SafetyPolicy | None = None,
    head: DomainHead | None = None,
    view_embed: EmbedFn | None = None,
) -> DomainDecision:
    """Classify one request; pure apart from calling the embedders.

    Args:
        text: the user's question.
        embed: embeds texts into normalised vectors (None: keyword rules only).
        exemplars: pre-embedded ``(medical, non_medical)`` exemplar matrices (computed
            with ``embed`` if None).
        policy: thresholds.
        head: the trained domain head (with ``embed``); None: exemplar similarity decides.
        view_embed: the head's adapted view encoder (None: ``embed`` embeds the views,
            for a head without an adapter).
    """
    policy = policy or SafetyPolicy()
    clean, injection = strip_injection(text)
    inj = tuple(injection)
    if not clean:
        if injection:
            return DomainDecision(
                False, "keywords", "the request only contains instructions to the system",
                injection=inj,
            )  # fmt: skip
        return DomainDecision(
            True, "default", "empty question: the image is analysed", injection=inj
        )
    med_kw, other_kw = keyword_evidence(clean)
    if embed is None:
        return _by_keywords(med_kw, other_kw, inj)
    if mostly_chinese(clean):  # the embedder and the head read English only
        d = _by_keywords(med_kw, other_kw, inj)
        return dataclasses.replace(d, reason=f"Chinese request, judged by keywords: {d.reason}")
    if exemplars is None:
        exemplars = embed_exemplars(embed)
    if head is None:
        return _by_exemplars(clean, embed, exemplars, policy, med_kw, other_kw, inj)
    both = np.asarray((view_embed or embed)(list(views(clean))), dtype=np.float32)
    plain = np.asarray(embed([clean]), dtype=np.float32)[0] if view_embed else None
    x = head_row(both, med_kw, other_kw, exemplars, plain)
    sim_med, sim_other = round(float(x[-2]), 4), round(float(x[-1]), 4)
    score = float(head.probability(x)[0])
    threshold = policy.domain_threshold if policy.domain_threshold is not None else head.threshold
    medical = score >= threshold
    evidence = (f"; clinical terms: {', '.join(med_kw[:3])}" if med_kw else "") + (
        f"; other topics: {', '.join(other_kw[:3])}" if other_kw else ""
    )
    reason = (
        f"medical-request score {score:.2f} >= {threshold:.2f}{evidence}"
        if medical
        else f"medical-request score {score:.2f} < {threshold:.2f}{evidence}"
    )
    return DomainDecision(
        medical, "head", reason, med_kw, other_kw, sim_med, sim_other, inj,
        round(score, 4), round(threshold, 4),
    )  # fmt: skip


def _by_keywords(
    med_kw: tuple[str, ...], other_kw: tuple[str, ...], inj: tuple[str, ...]
) -> DomainDecision:
    if med_kw and not other_kw:
        reason = f"clinical terms: {', '.join(med_kw[:5])}"
        return DomainDecision(True, "keywords", reason, med_kw, other_kw, injection=inj)
    if other_kw and not med_kw:
        reason = f"non-medical topic: {', '.join(other_kw[:5])}"
        return DomainDecision(False, "keywords", reason, med_kw, other_kw, injection=inj)
    medical = len(med_kw) > len(other_kw)
    reason = (
        f"keyword count {len(med_kw)} medical vs {len(other_kw)} other"
        if (med_kw or other_kw)
        else "no medical terms found"
    )
    return DomainDecision(medical, "keywords", reason, med_kw, other_kw, injection=inj)


def _by_exemplars(
    clean: str,
    embed: EmbedFn,
    exemplars: tuple[np.ndarray, np.ndarray],
    policy: SafetyPolicy,
    med_kw: tuple[str, ...],
    other_kw: tuple[str, ...],
    inj: tuple[str, ...],
) -> DomainDecision:
    """The fallback without a head: one-sided keywords, else exemplar similarity."""
    if bool(med_kw) != bool(other_kw):
        return _by_keywords(med_kw, other_kw, inj)
    v = np.asarray(embed([clean]), dtype=np.float32)[0]
    sim_med = float(np.max(exemplars[0] @ v))
    sim_other = float(np.max(exemplars[1] @ v))
    medical = (
        sim_med - sim_other >= policy.domain_margin and sim_med >= policy.min_medical_similarity
    )
    reason = (
        f"closer to medical requests ({sim_med:.2f}) than to other topics ({sim_other:.2f})"
        if medical
        else f"closer to non-medical requests ({sim_other:.2f}) than to medical ones ({sim_med:.2f})"
        if sim_other > sim_med
        else f"not clearly medical (similarity {sim_med:.2f} vs {sim_other:.2f} for other topics)"
    )
    return DomainDecision(
        medical, "embedding", reason, med_kw, other_kw, round(sim_med, 4), round(sim_other, 4), inj
    )


def embed_exemplars(embed: EmbedFn) -> tuple[np.ndarray, np.ndarray]:
    """Embed the medical and non-medical exemplar sets."""
    return (
        np.asarray(embed(list(MEDICAL_EXEMPLARS)), dtype=np.float32),
        np.asarray(embed(list(NON_MEDICAL_EXEMPLARS)), dtype=np.float32),
    )


class DomainClassifier:
    """The trained head on sentence embeddings (keyword rules without an embedder).

    Args:
        embed: embeds texts into L2-normalised vectors; None for keyword rules only.
        policy: thresholds.
        head: the trained domain head; None decides by exemplar similarity instead.
        view_embed: the head's adapted view encoder (required by a head with an adapter).
    """

    def __init__(
        self,
        embed: EmbedFn | None = None,
        policy: SafetyPolicy | None = None,
        head: DomainHead | None = None,
        view_embed: EmbedFn | None = None,
    ) -> None:
        if head is not None and head.adapter is not None and view_embed is None and embed:
            raise HeadError(
                f"the domain head reads vectors of its adapter {head.adapter}: pass its "
                "encoder as view_embed (DomainClassifier.from_preset loads it)"
            )
        self.embed = embed
        self.policy = policy or SafetyPolicy()
        self.head = head
        self.view_embed = view_embed
        self._exemplars: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_preset(
        cls, preset: str, policy: SafetyPolicy | None = None, head: DomainHead | None = None
    ) -> DomainClassifier:
        """Load a sentence embedder from the model registry ("" = keywords only), the head
        shipped in ``medray/safety/domain_head.json`` when it was trained on ``preset``, and
        the head's adapter."""
        if not preset:
            return cls(None, policy)
        from medray.models import load_embedder

        model = load_embedder(preset)
        if head is None:
            try:
                head = DomainHead.load()
            except HeadError as e:
                log.warning("domain head not loaded, exemplar similarity decides: %s", e)
        if head is not None and head.meta.get("embedder") != preset:
            log.warning(
                "domain head was trained on %r, not %r: exemplar similarity decides",
                head.meta.get("embedder"),
                preset,
            )
            head = None
        view_embed = None
        if head is not None and head.adapter is not None:
            from medray.safety.adapter import ViewEncoder

            view_embed = ViewEncoder(model, head.adapter)
        return cls(
            lambda texts: model.encode(list(texts), normalize_embeddings=True),
            policy,
            head,
            view_embed,
        )

    def classify(self, text: str) -> DomainDecision:
        """Decide whether ``text`` is a medical / radiology request."""
        if self.embed is not None and self._exemplars is None:
            self._exemplars = embed_exemplars(self.embed)
        return decide(text, self.embed, self._exemplars, self.policy, self.head, self.view_embed)
