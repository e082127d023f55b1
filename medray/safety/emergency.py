"""Emergency detection: text that describes a possible medical emergency.

Rules are regular expressions per category (chest pain, stroke signs, suicidal
ideation, severe bleeding, breathing difficulty, anaphylaxis, overdose/poisoning, loss of
consciousness/seizure), following the warning signs public-health services list (e.g.
NHS "When to call 999", the American Heart Association / American Stroke Association
F.A.S.T. signs, the 988 Suicide & Crisis Lifeline). A match preceded closely by a
negation ("no chest pain", "denies suicidal thoughts") does not count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

EMERGENCY_NUMBER_NOTE = (
    "call your local emergency number (for example 911 in the US, 112 in the EU, 999 in the UK)"
)

_RULES: dict[str, tuple[str, str]] = {
    "chest_pain": (
        r"chest (?:pain|pressure|tightness)|crushing (?:pain|pressure)|heart attack|"
        r"pain (?:spreading|radiating) (?:to|down) (?:my |the )?(?:left )?(?:arm|jaw)",
        "Chest pain or pressure can be a heart attack. If it is happening now, "
        + EMERGENCY_NUMBER_NOTE
        + ".",
    ),
    "stroke": (
        r"(?:face|facial) (?:is )?droop\w*|slurred speech|(?:can't|cannot|unable to) speak|"
        r"sudden (?:weakness|numbness|confusion|loss of vision)|"
        r"(?:weakness|numbness) (?:in|of|on) (?:one|the left|the right) (?:side|arm|leg)|"
        r"having a stroke",
        "Face drooping, arm weakness or speech difficulty can be a stroke (F.A.S.T.). "
        "Time matters: " + EMERGENCY_NUMBER_NOTE + " now.",
    ),
    "suicidal_ideation": (
        r"suicid\w*|kill (?:myself|me)|end (?:my|it all|my own) life|want to die|"
        r"(?:hurt|harm|cut) myself|self[- ]harm|no reason to live",
        "If you are thinking about suicide or harming yourself, you are not alone: call or "
        "text 988 (US Suicide & Crisis Lifeline), your local crisis line, or "
        + EMERGENCY_NUMBER_NOTE
        + ".",
    ),
    "severe_bleeding": (
        r"(?:severe|heavy|uncontrolled|massive) bleeding|"
        r"bleeding (?:heavily|profusely|a lot|that (?:won't|will not) stop|won't stop)|"
        r"(?:vomiting|coughing up) blood",
        "Severe or uncontrolled bleeding is an emergency: press firmly on the wound and "
        + EMERGENCY_NUMBER_NOTE
        + ".",
    ),
    "breathing": (
        r"(?:can't|cannot|can not|unable to) breathe|struggling to breathe|"
        r"severe (?:shortness of breath|difficulty breathing)|choking|turning blue|blue lips",
        "Severe difficulty breathing is an emergency: " + EMERGENCY_NUMBER_NOTE + ".",
    ),
    "anaphylaxis": (
        r"anaphyla\w*|throat (?:is )?(?:closing|swelling)|swollen (?:tongue|throat)",
        "Throat or tongue swelling after an exposure can be anaphylaxis: use an adrenaline "
        "(epinephrine) auto-injector if one is prescribed and " + EMERGENCY_NUMBER_NOTE + ".",
    ),
    "overdose_poisoning": (
        r"overdos\w*|took too many (?:pills|tablets)|swallowed (?:bleach|poison)|poison(?:ed|ing)",
        "A possible overdose or poisoning needs urgent help: call a poison control centre "
        "(1-800-222-1222 in the US) or " + EMERGENCY_NUMBER_NOTE + ".",
    ),
    "unresponsive_seizure": (
        r"unconscious|unresponsive|passed out|(?:having|had) a seizure|seizing|convuls\w*",
        "Loss of consciousness or a seizure needs urgent help: " + EMERGENCY_NUMBER_NOTE + ".",
    ),
}
_COMPILED = {k: re.compile(rf"\b(?:{rx})", re.IGNORECASE) for k, (rx, _) in _RULES.items()}
_NEGATION = re.compile(
    r"\b(?:no|not|denies|denied|without|never|negative for|free of|absence of|rule out)\b"
    r"(?:\W+\w+){0,3}\W*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class EmergencyFlag:
    """One possible emergency found in a text.

    Attributes:
        category: rule name (``chest_pain``, ``stroke``, ``suicidal_ideation``, ...).
        matched: the words that matched.
        notice: what to do, for the user.
    """

    category: str
    matched: str
    notice: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"category": self.category, "matched": self.matched, "notice": self.notice}


def detect_emergencies(text: str) -> list[EmergencyFlag]:
    """Every emergency category described in ``text`` (negated mentions excluded)."""
    flags: list[EmergencyFlag] = []
    for category, rx in _COMPILED.items():
        for m in rx.finditer(text):
            if _NEGATION.search(text[max(0, m.start() - 40) : m.start()]):
                continue
            flags.append(EmergencyFlag(category, m.group(0).lower(), _RULES[category][1]))
            break
    return flags


CATEGORIES: tuple[str, ...] = tuple(_RULES)
