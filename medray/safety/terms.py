"""Keyword vocabularies of domain control: clinical terms and clearly non-medical topics.

Used two ways: as evidence shown in every :class:`~medray.safety.domain.DomainDecision`, and
to build the second view of the domain head (the request with its clinical words masked,
so a non-medical request wrapped in medical words shows what it really asks).
"""

from __future__ import annotations

import re

MEDICAL_TERMS = (
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
NON_MEDICAL_TERMS = (
    r"recipes?|cook\w*|bak(?:e|ing)|football|soccer|basketball|cricket|tennis|"
    r"stocks?|shares|bitcoin|crypto\w*|invest\w*|mortgage|"
    r"movies?|films?|songs?|lyrics|poem|poetry|novel|jokes?|"
    r"capital of|weather|forecast|holiday|vacation|hotel|flights?|travel\w*|"
    r"python|javascript|java|programming|code|coding|software|compiler|sql|"
    r"translate|translation|election|president|politic\w*|"
    r"cars?|tyres?|tires?|engine oil|video games?|minecraft|fortnite|homework|essay"
)
MEDICAL_RE = re.compile(rf"\b(?:{MEDICAL_TERMS})\b", re.IGNORECASE)
NON_MEDICAL_RE = re.compile(rf"\b(?:{NON_MEDICAL_TERMS})\b", re.IGNORECASE)


def mask_medical_terms(text: str) -> str:
    """``text`` without its clinical terms (whitespace collapsed); "" if nothing is left."""
    return " ".join(MEDICAL_RE.sub(" ", text).split())


def _unique(matches: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for m in matches:
        if m.lower() not in out:
            out.append(m.lower())
    return tuple(out)


def keyword_evidence(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Clinical and non-medical topic keywords found in ``text``."""
    return _unique(MEDICAL_RE.findall(text)), _unique(NON_MEDICAL_RE.findall(text))
