"""Drug-interaction and dosage checks on generated text.

A small, sourced table of well-known, clinically significant interactions and adult
maximum daily doses. It is a safety net for generated text, not a drug database: an
absent warning means nothing. Sources (public labels and guidance):

- [FDA-WARF] Coumadin (warfarin) prescribing information, FDA; bleeding risk with
  antiplatelets and NSAIDs.
- [FDA-PDE5] Viagra (sildenafil) / Cialis (tadalafil) prescribing information, FDA:
  contraindicated with organic nitrates (severe hypotension).
- [FDA-SSRI] Prozac (fluoxetine) / Zoloft (sertraline) prescribing information, FDA:
  contraindicated with MAOIs (serotonin syndrome); tramadol label likewise.
- [FDA-SIMVA] FDA Drug Safety Communication (2011), simvastatin: contraindicated with
  strong CYP3A4 inhibitors (clarithromycin, itraconazole...), 80 mg dose restricted.
- [FDA-CLOP] FDA Drug Safety Communication (2009/2010), clopidogrel with omeprazole:
  reduced antiplatelet effect.
- [BNF-MTX] BNF, methotrexate with trimethoprim/co-trimoxazole: bone-marrow toxicity.
- [BNF-K] BNF, ACE inhibitors / ARBs with potassium-sparing diuretics: hyperkalaemia.
- [FDA-DIG] Lanoxin (digoxin) prescribing information: amiodarone raises digoxin levels.
- [ACR-CM] ACR Manual on Contrast Media: metformin and iodinated contrast (lactic acidosis
  in reduced renal function).
- [FDA-OTC] Labels: acetaminophen 4 g/day (OTC monograph), ibuprofen 3.2 g/day
  (prescription label; 1.2 g/day OTC), naproxen 1.5 g/day (prescription peak),
  aspirin 4 g/day (analgesic), loperamide 16 mg/day (FDA 2016 warning on cardiac
  events at high doses), diphenhydramine 300 mg/day.
- [FDA-LABEL] Maximum labelled daily doses: metformin 2,550 mg (Glucophage),
  atorvastatin 80 mg, simvastatin 40 mg (80 mg restricted), sertraline 200 mg,
  fluoxetine 80 mg, lisinopril 80 mg, amlodipine 10 mg, tramadol 400 mg.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any

# Brand and alternative names -> canonical generic name.
SYNONYMS: dict[str, str] = {
    "coumadin": "warfarin",
    "jantoven": "warfarin",
    "asa": "aspirin",
    "acetylsalicylic acid": "aspirin",
    "tylenol": "acetaminophen",
    "paracetamol": "acetaminophen",
    "advil": "ibuprofen",
    "motrin": "ibuprofen",
    "aleve": "naproxen",
    "viagra": "sildenafil",
    "cialis": "tadalafil",
    "nitroglycerin": "nitroglycerin",
    "glyceryl trinitrate": "nitroglycerin",
    "gtn": "nitroglycerin",
    "prozac": "fluoxetine",
    "zoloft": "sertraline",
    "nardil": "phenelzine",
    "zocor": "simvastatin",
    "lipitor": "atorvastatin",
    "biaxin": "clarithromycin",
    "plavix": "clopidogrel",
    "prilosec": "omeprazole",
    "bactrim": "trimethoprim",
    "co-trimoxazole": "trimethoprim",
    "aldactone": "spironolactone",
    "zestril": "lisinopril",
    "lanoxin": "digoxin",
    "glucophage": "metformin",
    "imodium": "loperamide",
    "benadryl": "diphenhydramine",
    "norvasc": "amlodipine",
    "ultram": "tramadol",
    "iodinated contrast": "iodinated contrast",
    "contrast medium": "iodinated contrast",
    "contrast media": "iodinated contrast",
}

# Generic name -> classes it belongs to (interaction rules may name a class).
CLASSES: dict[str, tuple[str, ...]] = {
    "warfarin": ("anticoagulant",),
    "aspirin": ("antiplatelet", "nsaid"),
    "ibuprofen": ("nsaid",),
    "naproxen": ("nsaid",),
    "clopidogrel": ("antiplatelet",),
    "sildenafil": ("pde5_inhibitor",),
    "tadalafil": ("pde5_inhibitor",),
    "nitroglycerin": ("nitrate",),
    "isosorbide mononitrate": ("nitrate",),
    "isosorbide dinitrate": ("nitrate",),
    "fluoxetine": ("ssri",),
    "sertraline": ("ssri",),
    "citalopram": ("ssri",),
    "phenelzine": ("maoi",),
    "selegiline": ("maoi",),
    "tranylcypromine": ("maoi",),
    "tramadol": ("serotonergic_opioid",),
    "simvastatin": ("simvastatin",),
    "clarithromycin": ("strong_cyp3a4_inhibitor",),
    "itraconazole": ("strong_cyp3a4_inhibitor",),
    "ketoconazole": ("strong_cyp3a4_inhibitor",),
    "omeprazole": ("omeprazole",),
    "methotrexate": ("methotrexate",),
    "trimethoprim": ("trimethoprim",),
    "lisinopril": ("ace_inhibitor",),
    "enalapril": ("ace_inhibitor",),
    "ramipril": ("ace_inhibitor",),
    "losartan": ("arb",),
    "spironolactone": ("potassium_sparing_diuretic",),
    "digoxin": ("digoxin",),
    "amiodarone": ("amiodarone",),
    "metformin": ("metformin",),
    "iodinated contrast": ("iodinated_contrast",),
    "acetaminophen": (),
    "atorvastatin": (),
    "amlodipine": (),
    "loperamide": (),
    "diphenhydramine": (),
}


@dataclass(frozen=True)
class InteractionRule:
    """Two drugs or classes that must not be combined without care."""

    a: str
    b: str
    severity: str  # "major" or "contraindicated"
    effect: str
    source: str


INTERACTIONS: tuple[InteractionRule, ...] = (
    InteractionRule(
        "anticoagulant", "antiplatelet", "major", "increased risk of serious bleeding", "FDA-WARF"
    ),
    InteractionRule(
        "anticoagulant",
        "nsaid",
        "major",
        "increased risk of serious (gastrointestinal) bleeding",
        "FDA-WARF",
    ),
    InteractionRule(
        "pde5_inhibitor",
        "nitrate",
        "contraindicated",
        "severe, possibly fatal low blood pressure",
        "FDA-PDE5",
    ),
    InteractionRule(
        "ssri", "maoi", "contraindicated", "serotonin syndrome (potentially fatal)", "FDA-SSRI"
    ),
    InteractionRule(
        "serotonergic_opioid",
        "ssri",
        "major",
        "serotonin syndrome and seizures",
        "FDA-SSRI",
    ),
    InteractionRule(
        "serotonergic_opioid", "maoi", "contraindicated", "serotonin syndrome", "FDA-SSRI"
    ),
    InteractionRule(
        "simvastatin",
        "strong_cyp3a4_inhibitor",
        "contraindicated",
        "myopathy and rhabdomyolysis",
        "FDA-SIMVA",
    ),
    InteractionRule(
        "clopidogrel",
        "omeprazole",
        "major",
        "reduced antiplatelet effect of clopidogrel",
        "FDA-CLOP",
    ),
    InteractionRule("methotrexate", "trimethoprim", "major", "bone-marrow suppression", "BNF-MTX"),
    InteractionRule(
        "ace_inhibitor", "potassium_sparing_diuretic", "major", "hyperkalaemia", "BNF-K"
    ),
    InteractionRule("arb", "potassium_sparing_diuretic", "major", "hyperkalaemia", "BNF-K"),
    InteractionRule("digoxin", "amiodarone", "major", "digoxin toxicity", "FDA-DIG"),
    InteractionRule(
        "metformin",
        "iodinated_contrast",
        "major",
        "lactic acidosis in patients with reduced kidney function",
        "ACR-CM",
    ),
)

# Adult maximum daily dose in mg, with its source key.
MAX_DAILY_MG: dict[str, tuple[float, str]] = {
    "acetaminophen": (4000.0, "FDA-OTC"),
    "ibuprofen": (3200.0, "FDA-OTC"),
    "naproxen": (1500.0, "FDA-OTC"),
    "aspirin": (4000.0, "FDA-OTC"),
    "loperamide": (16.0, "FDA-OTC"),
    "diphenhydramine": (300.0, "FDA-OTC"),
    "metformin": (2550.0, "FDA-LABEL"),
    "atorvastatin": (80.0, "FDA-LABEL"),
    "simvastatin": (40.0, "FDA-LABEL"),
    "sertraline": (200.0, "FDA-LABEL"),
    "fluoxetine": (80.0, "FDA-LABEL"),
    "lisinopril": (80.0, "FDA-LABEL"),
    "amlodipine": (10.0, "FDA-LABEL"),
    "tramadol": (400.0, "FDA-LABEL"),
}

_NAMES = sorted(set(CLASSES) | set(SYNONYMS), key=len, reverse=True)
_DRUG_RE = re.compile(r"\b(" + "|".join(re.escape(n) for n in _NAMES) + r")\b", re.IGNORECASE)
_UNIT_MG = {"mg": 1.0, "g": 1000.0, "gram": 1000.0, "grams": 1000.0, "mcg": 0.001, "µg": 0.001}
_UNIT_MG |= {"milligram": 1.0, "milligrams": 1.0, "microgram": 0.001, "micrograms": 0.001}
_NUMBER = r"(\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:[.,]\d+)?)"
_UNIT = r"(mg|milligrams?|g|grams?|mcg|µg|micrograms?)\b"
_AMOUNT = re.compile(_NUMBER + r"\s*" + _UNIT, re.IGNORECASE)
# An amount written before the drug: "8000 mg of paracetamol", "2 g of the ibuprofen".
_AMOUNT_BEFORE = re.compile(
    _NUMBER + r"\s*" + _UNIT + r"\s+(?:of\s+)?(?:(?:the|my|his|her|their|your)\s+)?$",
    re.IGNORECASE,
)
_WORD_TIMES = {"once": 1, "twice": 2, "three times": 3, "four times": 4, "five times": 5}
_FREQ = re.compile(
    r"\b(?P<word>once|twice|three times|four times|five times|(?P<n>\d+) times)\s+(?:a|per|each)\s+day\b|"
    r"\bevery\s+(?P<hours>\d+)\s*(?:hours?|hrs?|h)\b|"
    r"\bq(?P<qh>\d+)h\b|\b(?P<abbr>bid|b\.i\.d\.|tid|t\.i\.d\.|qid|q\.i\.d\.)\b|"
    r"\b(?P<daily>daily|a day|per day|/day|/d)\b",
    re.IGNORECASE,
)
_ABBR = {"bid": 2, "b.i.d.": 2, "tid": 3, "t.i.d.": 3, "qid": 4, "q.i.d.": 4}


def canonical(name: str) -> str:
    """Generic name for a drug name or brand (lower case)."""
    n = name.lower()
    return SYNONYMS.get(n, n)


def find_drugs(text: str) -> list[str]:
    """Generic names of the table's drugs mentioned in ``text``, in order of appearance."""
    out: list[str] = []
    for m in _DRUG_RE.finditer(text):
        c = canonical(m.group(1))
        if c not in out:
            out.append(c)
    return out


@dataclass(frozen=True)
class InteractionWarning:
    """Two drugs mentioned together that interact."""

    drugs: tuple[str, str]
    severity: str
    effect: str
    source: str

    def message(self) -> str:
        """One line for a user."""
        return (
            f"{self.drugs[0]} + {self.drugs[1]}: {self.severity} interaction, {self.effect} "
            f"[{self.source}]"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "drugs": list(self.drugs),
            "severity": self.severity,
            "effect": self.effect,
            "source": self.source,
            "message": self.message(),
        }


def check_interactions(text: str) -> list[InteractionWarning]:
    """Known interactions between any two drugs mentioned in ``text``."""
    drugs = find_drugs(text)
    out: list[InteractionWarning] = []
    for d1, d2 in combinations(drugs, 2):
        c1 = {d1, *CLASSES.get(d1, ())}
        c2 = {d2, *CLASSES.get(d2, ())}
        for rule in INTERACTIONS:
            if (rule.a in c1 and rule.b in c2) or (rule.a in c2 and rule.b in c1):
                out.append(InteractionWarning((d1, d2), rule.severity, rule.effect, rule.source))
                break
    return out


@dataclass(frozen=True)
class DoseWarning:
    """A dose in the text above the adult maximum daily dose."""

    drug: str
    stated: str
    daily_mg: float
    max_daily_mg: float
    source: str

    def message(self) -> str:
        """One line for a user."""
        return (
            f"{self.drug}: '{self.stated}' is {self.daily_mg:g} mg/day, above the adult maximum "
            f"of {self.max_daily_mg:g} mg/day [{self.source}]"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "drug": self.drug,
            "stated": self.stated,
            "daily_mg": self.daily_mg,
            "max_daily_mg": self.max_daily_mg,
            "source": self.source,
            "message": self.message(),
        }


def _times_per_day(m: re.Match[str]) -> tuple[float, bool]:
    """(doses per day, whether the amount is already a daily total)."""
    if m.group("word"):
        n = m.group("n")
        return float(n) if n else float(_WORD_TIMES[m.group("word").lower()]), False
    if m.group("hours"):
        return 24.0 / max(1, int(m.group("hours"))), False
    if m.group("qh"):
        return 24.0 / max(1, int(m.group("qh"))), False
    if m.group("abbr"):
        return float(_ABBR[m.group("abbr").lower()]), False
    return 1.0, True


def _number(s: str) -> float:
    """``"8,000"`` is eight thousand (a comma before three digits groups thousands);
    ``"1,5"`` and ``"1.5"`` are one and a half."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", s):
        return float(s.replace(",", ""))
    return float(s.replace(",", "."))


def check_doses(text: str) -> list[DoseWarning]:
    """Doses of table drugs stated in ``text`` above the adult maximum daily dose.

    A dose is an amount with a unit within a few words after the drug's name, with an
    optional frequency after it ("500 mg four times a day", "1 g every 4 hours",
    "6 g per day", "800 mg tid"), or an amount just before the name with the frequency
    after the name ("8000 mg of paracetamol per day"); without a frequency the amount is
    taken as one dose per day. "8,000 mg" is eight thousand milligrams.
    """
    out: list[DoseWarning] = []
    for dm in _DRUG_RE.finditer(text):
        drug = canonical(dm.group(1))
        if drug not in MAX_DAILY_MG:
            continue
        window = text[dm.end() : dm.end() + 60]
        am = _AMOUNT.search(window)
        if am and len(window[: am.start()].split()) <= 5:
            tail, stated = window[am.end() : am.end() + 40], am.group(0)
        else:
            before = text[max(0, dm.start() - 40) : dm.start()]
            am = _AMOUNT_BEFORE.search(before)
            if not am:
                continue
            tail, stated = window[:40], before[am.start() :] + dm.group(1)
        amount = _number(am.group(1)) * _UNIT_MG[am.group(2).lower()]
        fm = _FREQ.search(tail)
        per_day, _total = _times_per_day(fm) if fm else (1.0, True)
        daily = amount * per_day
        limit, source = MAX_DAILY_MG[drug]
        if daily > limit + 1e-9:
            stated = (stated + (" " + fm.group(0) if fm else "")).strip()
            out.append(DoseWarning(drug, stated, round(daily, 3), limit, source))
    return out
