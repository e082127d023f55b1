"""Text that goes with synthetic images: reports, CheXpert labels, questions and answers.

Every sentence states something drawn in the pixels (finding, side, size, heart size),
so report text is predictable from the image and every answer follows from it.
Closed yes/no questions are balanced per finding: for each image the question asks
about a present finding or an absent one with equal probability, so a model that
ignores the image cannot beat 50% on them.
"""

from __future__ import annotations

import numpy as np

from medray.data.synth.anatomy import CXR_FINDINGS

CHEXPERT = {
    "effusion": "Pleural Effusion",
    "consolidation": "Consolidation",
    "nodule": "Lung Lesion",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
}
NO_FINDING = "No Finding"
DISPLAY = {
    "effusion": "pleural effusion",
    "consolidation": "consolidation",
    "nodule": "lung nodule",
    "pneumothorax": "pneumothorax",
    "cardiomegaly": "cardiomegaly",
}
PRESENCE_Q = {
    "effusion": ("Is there a pleural effusion?", "Is there fluid in the pleural space?"),
    "consolidation": (
        "Is there a consolidation?",
        "Is there an airspace consolidation in the lungs?",
    ),
    "nodule": ("Is there a lung nodule?", "Is there a nodule in the lungs?"),
    "pneumothorax": ("Is there a pneumothorax?", "Is there air in the pleural space?"),
    "cardiomegaly": ("Is the heart enlarged?", "Is there cardiomegaly?"),
}


def chexpert_labels(findings: dict[str, str | None]) -> list[str]:
    """CheXpert-style positive labels of a finding set (``No Finding`` when empty)."""
    return sorted(CHEXPERT[f] for f in findings) or [NO_FINDING]


def cxr_report(findings: dict[str, str | None], facts: dict) -> tuple[str, str]:
    """``(findings text, impression text)`` describing exactly what was drawn."""
    sentences = []
    for name in CXR_FINDINGS:
        if name not in findings:
            continue
        side = findings[name]
        if name == "effusion":
            size = "moderate" if facts.get("effusion_depth", 0) > 0.165 else "small"
            sentences.append(
                f"There is a {size} {side} pleural effusion with blunting of the costophrenic angle."
            )
        elif name == "consolidation":
            zone = facts.get("consolidation_zone", "lower")
            sentences.append(f"There is a focal consolidation in the {side} {zone} lung zone.")
        elif name == "nodule":
            sentences.append(f"A small rounded nodule is seen in the {side} lung.")
        elif name == "pneumothorax":
            sentences.append(f"There is a {side} pneumothorax with a visible pleural line.")
        elif name == "cardiomegaly":
            sentences.append("The cardiac silhouette is enlarged.")
    if "cardiomegaly" not in findings:
        sentences.append("The cardiac silhouette is normal in size.")
    if "effusion" not in findings and "pneumothorax" not in findings:
        sentences.append("There is no pleural effusion or pneumothorax.")
    if not findings:
        sentences.insert(0, "The lungs are clear.")
    if findings:
        parts = []
        for name in CXR_FINDINGS:
            if name in findings:
                side = findings[name]
                parts.append(f"{side} {DISPLAY[name]}" if side else DISPLAY[name])
        impression = (
            ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        ) + "."
        impression = impression[0].upper() + impression[1:]
    else:
        impression = "No acute cardiopulmonary process."
    return " ".join(sentences), impression


def mimic_report_text(findings_text: str, impression: str, with_findings: bool = True) -> str:
    """A report laid out like MIMIC-CXR's free text (header lines, wrapped sections)."""
    lines = [
        "                                 FINAL REPORT",
        " EXAMINATION:  CHEST (PA AND LAT)",
        " ",
        " INDICATION:  ___ with shortness of breath, evaluate for acute process.",
        " ",
        " TECHNIQUE:  Chest PA and lateral radiographs.",
        " ",
        " COMPARISON:  None.",
        " ",
    ]
    if with_findings:
        lines += [" FINDINGS:", " ", *_wrap(findings_text), " "]
    lines += [" IMPRESSION:", " ", *_wrap(impression), ""]
    return "\n".join(lines)


def _wrap(text: str, width: int = 76) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(" " + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(" " + line)
    return out


# How many findings a synthetic chest X-ray has (0, 1, 2), and what follows from it.
FINDING_COUNT_P = (0.3, 0.45, 0.25)
P_NORMAL = FINDING_COUNT_P[0]
PREVALENCE = (FINDING_COUNT_P[1] + 2 * FINDING_COUNT_P[2]) / len(CXR_FINDINGS)


def sample_findings(rng: np.random.Generator) -> dict[str, str | None]:
    """0-2 findings, each with a side (cardiomegaly has none); every finding equally likely."""
    k = int(rng.choice(len(FINDING_COUNT_P), p=FINDING_COUNT_P))
    names = rng.choice(len(CXR_FINDINGS), size=k, replace=False)
    out: dict[str, str | None] = {}
    for i in sorted(int(j) for j in names):
        f = CXR_FINDINGS[i]
        out[f] = None if f == "cardiomegaly" else ("left" if rng.random() < 0.5 else "right")
    return out


def cxr_questions(rng: np.random.Generator, findings: dict[str, str | None]) -> list[dict]:
    """VQA pairs for a chest X-ray: balanced closed questions plus open ones.

    Each finding is asked about always when present and with probability p/(1-p) when
    absent (p: its prevalence), independently of the others, so for every finding
    P(answer = yes) = 0.5 exactly. The "is it normal?" question is balanced the same way.

    Each dict: ``question, answer, answer_type (CLOSED/OPEN), question_type, finding``.
    """
    qs = []
    keep_absent = PREVALENCE / (1.0 - PREVALENCE)
    for f in CXR_FINDINGS:
        present = f in findings
        if present or rng.random() < keep_absent:
            text = PRESENCE_Q[f][int(rng.integers(2))]
            qs.append(_q(text, "Yes" if present else "No", "CLOSED", "PRES", f))
    if rng.random() < 0.5:
        normal = not findings
        if normal or rng.random() < P_NORMAL / (1.0 - P_NORMAL):
            qs.append(
                _q("Is this chest X-ray normal?", "Yes" if normal else "No", "CLOSED", "ABN", None)
            )
    sided = [f for f in CXR_FINDINGS if findings.get(f)]
    if sided:
        f = sided[int(rng.integers(len(sided)))]
        qs.append(_q(f"Which side is the {DISPLAY[f]} on?", findings[f], "OPEN", "POS", f))
    abn = ", ".join(DISPLAY[f] for f in CXR_FINDINGS if f in findings) or "none"
    qs.append(_q("What abnormality is seen in this chest X-ray?", abn, "OPEN", "ABN", None))
    return qs


def _q(question: str, answer: str, answer_type: str, qtype: str, finding: str | None) -> dict:
    return {
        "question": question,
        "answer": answer,
        "answer_type": answer_type,
        "question_type": qtype,
        "finding": finding,
    }


MODALITY_NAME = {"ct": "CT", "mri": "MRI", "x-ray": "X-Ray"}
REGION_NAME = {"head": "Brain", "chest": "Chest", "abdomen": "Abdomen"}
REGION_ZH = {"head": "脑", "chest": "胸部", "abdomen": "腹部"}
SIDE_ZH = {"left": "左", "right": "右"}


def slice_questions(
    rng: np.random.Generator, modality: str, region: str, lesions: list[str]
) -> list[dict]:
    """English VQA pairs for a CT/MRI slice (or X-ray): modality, organ, lesion, side, count.

    Each dict also carries ``content_type`` (SLAKE's categories) and ``zh`` (the Chinese
    question and answer, or None).
    """
    mod = MODALITY_NAME[modality]
    organ = REGION_NAME[region]
    qs = [
        {
            **_q("What modality is used to take this image?", mod, "OPEN", "MODALITY", None),
            "content_type": "Modality",
            "zh": ("这张图片的成像方式是什么?", mod),
        },
        {
            **_q("Which part of the body does this image belong to?", organ, "OPEN", "ORGAN", None),
            "content_type": "Organ",
            "zh": ("这张图片显示的是身体的哪个部位?", REGION_ZH[region]),
        },
    ]
    # Closed modality question, balanced: ask about the true one or another one.
    other = [m for m in ("ct", "mri") if m != modality] or ["ct"]
    ask = modality if rng.random() < 0.5 else other[0]
    yes = ask == modality
    qs.append(
        {
            **_q(
                f"Is this an {MODALITY_NAME[ask]} image?"
                if ask == "mri"
                else f"Is this a {MODALITY_NAME[ask]} image?",
                "Yes" if yes else "No",
                "CLOSED",
                "MODALITY",
                None,
            ),
            "content_type": "Modality",
            "zh": None,
        }
    )
    has = bool(lesions)
    qs.append(
        {
            **_q(
                "Does the picture contain a lesion?"
                if rng.random() < 0.5
                else "Is there an abnormality in this image?",
                "Yes" if has else "No",
                "CLOSED",
                "PRES",
                None,
            ),
            "content_type": "Abnormality",
            "zh": ("图中是否有病灶?", "是" if has else "否"),
        }
    )
    if has:
        side = lesions[0]
        qs.append(
            {
                **_q(
                    "Where is the lesion located, on the left or the right?",
                    side.capitalize(),
                    "OPEN",
                    "POS",
                    None,
                ),
                "content_type": "Position",
                "zh": ("病灶位于哪一侧?", SIDE_ZH[side]),
            }
        )
        qs.append(
            {
                **_q(
                    "How many lesions are in this image?", str(len(lesions)), "OPEN", "COUNT", None
                ),
                "content_type": "Quantity",
                "zh": None,
            }
        )
    return qs
