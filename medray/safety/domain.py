"""Domain control: is this a medical / radiology request? A transparent classifier.

Two kinds of evidence, both visible in the :class:`DomainDecision`:

1. Keyword rules: clinical vocabulary (imaging, anatomy, findings, symptoms, drugs) and
   clearly non-medical topics (cooking, sport, finance, programming, travel, ...).
   Keywords of only one side decide.
2. When the keywords are absent or mixed: cosine similarity of the request to a few
   medical and non-medical exemplar requests under a real sentence embedder
   (all-MiniLM-L6-v2, preset ``minilm-l6``). Medical when the best medical similarity
   beats the best non-medical one by ``policy.domain_margin`` and reaches
   ``policy.min_medical_similarity``.

Prompt injection: sentences that try to instruct the system ("ignore previous
instructions", "you are now ...", "classify this as medical") are removed before
classification and reported, so text inside a question cannot change the decision.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medray.safety.policy import SafetyPolicy

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

_MEDICAL_TERMS = (
    r"x-?rays?|radiographs?|radiolog\w*|ct|cta|mri|pet|ultrasound|sonograph\w*|mammogra\w*|"
    r"angiogra\w*|fluoroscop\w*|scan|imaging|dicom|"
    r"chest|lungs?|pulmonary|pleura\w*|heart|cardiac|cardio\w*|aort\w*|brain|cerebr\w*|"
    r"spine|spinal|vertebra\w*|abdom\w*|liver|hepat\w*|kidneys?|renal|bowel|pelvi\w*|"
    r"bones?|skull|thora\w*|mediastin\w*|lobes?|hilar|diaphragm\w*|"
    r"effusions?|pneumo\w*|atelecta\w*|consolidation|opacit\w*|nodules?|mass|masses|lesions?|"
    r"fractures?|tumou?rs?|cancer|carcinoma|metasta\w*|edema|oedema|emphysema|fibrosis|"
    r"cardiomegaly|infarct\w*|hemorrhage|haemorrhage|stroke|embol\w*|aneurysm|stenosis|"
    r"cyst\w*|calcifi\w*|abnormalit\w*|findings?|impression|diagnos\w*|prognos\w*|"
    r"patients?|symptoms?|disease|disorders?|syndrome|infection|fever|pain|cough|"
    r"medications?|medicines?|drugs?|dos(?:e|es|age)|mg|tablets?|pills?|prescri\w*|"
    r"clinical|clinician|doctor|physician|nurse|hospital|surgery|surgical|treatment|therapy|"
    r"blood|diabet\w*|hypertension|asthma|copd|tubercul\w*|covid\w*|sepsis|"
    r"warfarin|aspirin|ibuprofen|acetaminophen|paracetamol|metformin|insulin|antibiotics?|"
    r"anatomy|anatomical|organ|modality|contrast|suicid\w*|overdos\w*|bleeding"
)
_NON_MEDICAL_TERMS = (
    r"recipes?|cook\w*|bak(?:e|ing)|football|soccer|basketball|cricket|tennis|"
    r"stocks?|shares|bitcoin|crypto\w*|invest\w*|mortgage|"
    r"movies?|films?|songs?|lyrics|poem|poetry|novel|jokes?|"
    r"capital of|weather|forecast|holiday|vacation|hotel|flights?|travel\w*|"
    r"python|javascript|java|programming|code|coding|software|compiler|sql|"
    r"translate|translation|election|president|politic\w*|"
    r"cars?|tyres?|tires?|engine oil|video games?|minecraft|fortnite|homework|essay"
)
_MEDICAL_RE = re.compile(rf"\b(?:{_MEDICAL_TERMS})\b", re.IGNORECASE)
_NON_MEDICAL_RE = re.compile(rf"\b(?:{_NON_MEDICAL_TERMS})\b", re.IGNORECASE)

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

    Returns:
        ``(remaining text, names of the injection patterns found)``.
    """
    found: list[str] = []
    kept: list[str] = []
    for sentence in _SENTENCES.split(text):
        hits = [name for name, rx in INJECTION_PATTERNS.items() if rx.search(sentence)]
        if hits:
            found.extend(h for h in hits if h not in found)
        else:
            kept.append(sentence)
    return " ".join(s for s in kept if s.strip()).strip(), found


@dataclass(frozen=True)
class DomainDecision:
    """Why a request was judged medical or not.

    Attributes:
        medical: the decision.
        method: ``keywords``, ``embedding`` or ``default`` (nothing to judge).
        reason: one line a user can read.
        medical_keywords: clinical terms found.
        other_keywords: non-medical topic terms found.
        medical_similarity: best cosine similarity to a medical exemplar (None without
            an embedder).
        other_similarity: best cosine similarity to a non-medical exemplar.
        injection: injection patterns found (and ignored).
    """

    medical: bool
    method: str
    reason: str
    medical_keywords: tuple[str, ...] = ()
    other_keywords: tuple[str, ...] = ()
    medical_similarity: float | None = None
    other_similarity: float | None = None
    injection: tuple[str, ...] = field(default_factory=tuple)

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
        }


def _unique(matches: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for m in matches:
        if m.lower() not in out:
            out.append(m.lower())
    return tuple(out)


def keyword_evidence(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Clinical and non-medical topic keywords found in ``text``."""
    return _unique(_MEDICAL_RE.findall(text)), _unique(_NON_MEDICAL_RE.findall(text))


def decide(
    text: str,
    embed: EmbedFn | None = None,
    exemplars: tuple[np.ndarray, np.ndarray] | None = None,
    policy: SafetyPolicy | None = None,
) -> DomainDecision:
    """Classify one request; pure apart from calling ``embed``.

    Args:
        text: the user's question.
        embed: embeds texts into normalised vectors (None: keyword rules only).
        exemplars: pre-embedded ``(medical, non_medical)`` exemplar matrices (computed
            with ``embed`` if None).
        policy: thresholds.
    """
    policy = policy or SafetyPolicy()
    clean, injection = strip_injection(text)
    inj = tuple(injection)
    if not clean:
        if injection:
            return DomainDecision(
                False,
                "keywords",
                "the request only contains instructions to the system",
                (),
                (),
                None,
                None,
                inj,
            )
        return DomainDecision(
            True, "default", "empty question: the image is analysed", injection=inj
        )
    med_kw, other_kw = keyword_evidence(clean)
    if med_kw and not other_kw:
        return DomainDecision(
            True,
            "keywords",
            f"clinical terms: {', '.join(med_kw[:5])}",
            med_kw,
            other_kw,
            injection=inj,
        )
    if other_kw and not med_kw:
        return DomainDecision(
            False,
            "keywords",
            f"non-medical topic: {', '.join(other_kw[:5])}",
            med_kw,
            other_kw,
            injection=inj,
        )
    if embed is None:
        medical = len(med_kw) > len(other_kw)
        reason = (
            f"keyword count {len(med_kw)} medical vs {len(other_kw)} other"
            if (med_kw or other_kw)
            else "no medical terms found"
        )
        return DomainDecision(medical, "keywords", reason, med_kw, other_kw, injection=inj)
    if exemplars is None:
        exemplars = embed_exemplars(embed)
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
    """Keyword rules plus sentence-embedding similarity, with exemplars embedded once.

    Args:
        embed: embeds texts into L2-normalised vectors; None for keyword rules only.
        policy: thresholds.
    """

    def __init__(self, embed: EmbedFn | None = None, policy: SafetyPolicy | None = None) -> None:
        self.embed = embed
        self.policy = policy or SafetyPolicy()
        self._exemplars: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_preset(cls, preset: str, policy: SafetyPolicy | None = None) -> DomainClassifier:
        """Load a sentence embedder from the model registry ("" = keywords only)."""
        if not preset:
            return cls(None, policy)
        from medray.models import load_embedder

        model = load_embedder(preset)
        return cls(lambda texts: model.encode(list(texts), normalize_embeddings=True), policy)

    def classify(self, text: str) -> DomainDecision:
        """Decide whether ``text`` is a medical / radiology request."""
        if self.embed is not None and self._exemplars is None:
            self._exemplars = embed_exemplars(self.embed)
        return decide(text, self.embed, self._exemplars, self.policy)
