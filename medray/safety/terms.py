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

# Chinese, SLAKE's second language. The sentence embedder (all-MiniLM-L6-v2) reads English
# only, so a request written mostly in Chinese is judged by these terms (domain.decide);
# single characters that also occur in everyday words are left out or guarded (脑 but not
# 电脑, "computer").
MEDICAL_TERMS_ZH = (
    "器官|肾脏|肾|肝脏|肝|脾脏|脾|大脑|(?<!电)脑|肺|心脏|心肌|心电|胸部|胸腔|腹部|腹腔|盆腔|"
    "骨骼|骨折|脊柱|椎|膀胱|胆囊|胰腺|肠|胃|食管|气管|血管|主动脉|淋巴|甲状腺|"
    "病变|病灶|疾病|病人|患者|病情|生病|异常|肿瘤|肿块|瘤|癌|结节|积液|水肿|气胸|肺炎|"
    "出血|梗死|梗塞|炎症|感染|钙化|"
    "成像|影像|扫描|磁共振|核磁|超声|造影|X光|胸片|加权|"
    "诊断|症状|治疗|药物|用药|剂量|医生|医院|手术|发烧|发热|疼痛|咳嗽|呼吸|血压|糖尿病|"
    "身体|部位|解剖"
)
NON_MEDICAL_TERMS_ZH = (
    "食谱|菜谱|做饭|烹饪|足球|篮球|比赛|股票|股市|比特币|加密货币|投资|电影|歌曲|歌词|诗|"
    "小说|笑话|天气|旅游|旅行|酒店|航班|机票|编程|代码|程序|软件|电脑|手机|网络|选举|"
    "总统|政治|汽车|游戏|作业|翻译|首都|城市"
)
_ASCII_BOUND = "(?<![A-Za-z]){}(?![A-Za-z])"  # English terms inside Chinese text: no \b there
MEDICAL_ZH_RE = re.compile(
    "|".join([_ASCII_BOUND.format(f"(?:{MEDICAL_TERMS})"), MEDICAL_TERMS_ZH]), re.IGNORECASE
)
NON_MEDICAL_ZH_RE = re.compile(
    "|".join([_ASCII_BOUND.format(f"(?:{NON_MEDICAL_TERMS})"), NON_MEDICAL_TERMS_ZH]),
    re.IGNORECASE,
)
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def mostly_chinese(text: str) -> bool:
    """At least half of ``text``'s letters are CJK ideographs."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and 2 * sum(bool(_CJK_RE.match(c)) for c in letters) >= len(letters)


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
    """Clinical and non-medical topic keywords found in ``text`` (English, and Chinese when
    the text has CJK ideographs)."""
    if _CJK_RE.search(text):
        return _unique(MEDICAL_ZH_RE.findall(text)), _unique(NON_MEDICAL_ZH_RE.findall(text))
    return _unique(MEDICAL_RE.findall(text)), _unique(NON_MEDICAL_RE.findall(text))
