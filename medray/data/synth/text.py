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


# Words for the drawn sizes (thresholds split each range of medray.data.synth.anatomy
# into thirds, so each word covers a visibly different size).
def effusion_size(depth: float) -> str:
    """``small`` / ``moderate`` / ``large`` for a fluid column of ``depth`` (image fraction)."""
    return "small" if depth < 0.153 else "moderate" if depth < 0.187 else "large"


def consolidation_size(scale: float) -> str:
    return "small" if scale < 0.95 else "moderate" if scale < 1.15 else "large"


def pneumothorax_size(shrink: float) -> str:
    """The smaller the collapsed lung (``shrink``), the larger the pneumothorax."""
    return "large" if shrink < 0.573 else "moderate" if shrink < 0.647 else "small"


def cardiomegaly_degree(heart_width: float) -> str:
    """``mild`` / ``moderate`` / ``marked`` by the nominal cardiothoracic ratio (width / 0.29)."""
    ctr = heart_width / 0.29
    return "mild" if ctr < 0.695 else "moderate" if ctr < 0.752 else "marked"


def nodule_zone(dy: float) -> str:
    return "upper" if dy < -0.25 else "mid" if dy < 0.05 else "lower"


def nodule_mm(r: float) -> int:
    """Nodule diameter in mm, taking the image as 250 mm wide."""
    return round(2 * r * 250)


def nodule_size(r: float) -> str:
    return "small" if r < 0.0453 else "moderate" if r < 0.0527 else "large"


_VOLUME = {
    "low": ("Lung volumes are low.", "Low lung volumes.", "The lung volumes are low."),
    "normal": ("Lung volumes are normal.", "Normal lung volumes.", "The lungs are well expanded."),
    "high": ("The lungs are hyperinflated.", "Lung volumes are high.", "Hyperexpanded lungs."),
}
_HEART_OK = (
    "The cardiac silhouette is normal in size.",
    "Heart size is normal.",
    "Normal heart size.",
)
_NO_PLEURAL = (
    "There is no pleural effusion or pneumothorax.",
    "No pleural effusion or pneumothorax.",
    "No effusion or pneumothorax is seen.",
)
_CLEAR = (
    "The lungs are clear.",
    "No focal consolidation.",
    "The lungs are clear of consolidation.",
)
_NORMAL_IMPRESSION = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
)


def _pick(rng: np.random.Generator | None, options: tuple[str, ...]) -> str:
    return options[0] if rng is None else options[int(rng.integers(len(options)))]


def _finding_sentence(rng, name: str, side: str | None, a: dict) -> tuple[str, str]:
    """``(findings sentence, impression phrase)`` of one drawn finding; size, side and zone
    words come first so a truncated text keeps them."""
    if name == "effusion":
        size = effusion_size(a["effusion_depth"])
        sentence = _pick(
            rng,
            (
                f"There is a {size} {side} pleural effusion with blunting of the costophrenic angle.",
                f"A {size} {side} pleural effusion layers at the {side} base.",
                f"{size.capitalize()} {side} pleural effusion is present.",
            ),
        )
        return sentence, f"{size} {side} pleural effusion"
    if name == "consolidation":
        size = consolidation_size(a["consolidation_scale"])
        zone, dense = a["consolidation_zone"], a["consolidation_density"]
        sentence = _pick(
            rng,
            (
                f"There is a {size} {dense} consolidation in the {side} {zone} zone.",
                f"A {size} area of {dense} consolidation occupies the {side} {zone} zone.",
                f"{size.capitalize()} {dense} {side} {zone} zone consolidation.",
            ),
        )
        return sentence, f"{side} {zone} zone consolidation"
    if name == "nodule":
        zone, mm = nodule_zone(a["nodule_dy"]), nodule_mm(a["nodule_r"])
        size = nodule_size(a["nodule_r"])
        sentence = _pick(
            rng,
            (
                f"A {size} {mm} mm rounded nodule is seen in the {side} {zone} zone.",
                f"There is a {size} {mm} mm nodule in the {side} {zone} lung.",
                f"{size.capitalize()} {side} {zone} zone nodule measuring {mm} mm.",
            ),
        )
        return sentence, f"{mm} mm {side} {zone} zone nodule"
    if name == "pneumothorax":
        size = pneumothorax_size(a["pneumothorax_shrink"])
        sentence = _pick(
            rng,
            (
                f"There is a {size} {side} pneumothorax with a visible pleural line.",
                f"A {size} {side} pneumothorax is present.",
                f"{size.capitalize()} {side} pneumothorax with partial lung collapse.",
            ),
        )
        return sentence, f"{size} {side} pneumothorax"
    degree = cardiomegaly_degree(a["heart_width"])
    sentence = _pick(
        rng,
        (
            f"The cardiac silhouette is {degree}ly enlarged.",
            f"There is {degree} cardiomegaly.",
            f"{degree.capitalize()} enlargement of the cardiac silhouette.",
        ),
    )
    return sentence, f"{degree} cardiomegaly"


def cxr_report(
    findings: dict[str, str | None], facts: dict, rng: np.random.Generator | None = None
) -> tuple[str, str]:
    """``(findings text, impression text)`` describing exactly what was drawn.

    ``facts``: the drawing attributes (:func:`medray.data.synth.anatomy.sample_cxr_attrs`;
    missing ones take mid-range values). Each finding is described by its side, zone,
    size (following the drawn size) and density where the drawing has them; lung volumes
    and heart size are always stated. ``rng`` picks among equivalent phrasings and the
    order of the finding sentences (the first phrasing, in a fixed order, without it), so
    the texts of studies with the same findings differ, deterministically for a seed.
    """
    a = {
        "lung_volume": "normal",
        "heart_width": 0.21 if "cardiomegaly" in findings else 0.12,
        "effusion_depth": 0.17,
        "consolidation_zone": "lower",
        "consolidation_scale": 1.05,
        "consolidation_density": "dense",
        "nodule_r": 0.049,
        "nodule_dy": -0.1,
        "pneumothorax_shrink": 0.61,
        **facts,
    }
    names = [f for f in CXR_FINDINGS if f in findings]
    order = list(names) if rng is None else [names[i] for i in rng.permutation(len(names))]
    described = {f: _finding_sentence(rng, f, findings[f], a) for f in order}
    sentences = [described[f][0] for f in order]
    sentences.append(_pick(rng, _VOLUME[a["lung_volume"]]))
    if "cardiomegaly" not in findings:
        sentences.append(_pick(rng, _HEART_OK))
    # The negatives the CheXpert CSV records (0.0) are all stated.
    if "effusion" not in findings and "pneumothorax" not in findings:
        sentences.append(_pick(rng, _NO_PLEURAL))
    elif "pneumothorax" not in findings:
        sentences.append(_pick(rng, ("No pneumothorax.", "There is no pneumothorax.")))
    elif "effusion" not in findings:
        sentences.append(_pick(rng, ("No pleural effusion.", "There is no pleural effusion.")))
    if not findings:
        sentences.insert(0, _pick(rng, _CLEAR))
    if findings:
        parts = [described[f][1] for f in order]
        impression = (" and ".join(parts) if len(parts) <= 2 else ", ".join(parts)) + "."
        impression = impression[0].upper() + impression[1:]
    else:
        impression = _pick(rng, _NORMAL_IMPRESSION)
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
    rng: np.random.Generator,
    modality: str,
    region: str,
    lesions: list[str],
    modalities: tuple[str, ...] = ("ct", "mri"),
) -> list[dict]:
    """English VQA pairs for a CT/MRI slice (or X-ray): modality, organ, lesion, side, count.

    ``modalities`` are the ones the dataset draws from, equally often: the closed modality
    question asks about the true one or, half the time, one of the others at random, so
    P(Yes) is 0.5 for each wording and the text alone does not give the answer away (the
    blank-image control depends on it). Each dict also carries ``content_type`` (SLAKE's
    categories) and ``zh`` (the Chinese question and answer, or None).
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
    other = [m for m in modalities if m != modality] or ["ct"]
    ask = modality if rng.random() < 0.5 else other[int(rng.integers(len(other)))]
    yes = ask == modality
    qs.append(
        {
            **_q(
                f"Is this an {MODALITY_NAME[ask]} image?"
                if ask in ("mri", "x-ray")
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
