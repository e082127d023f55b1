"""Emergency detection: text that describes a possible medical emergency.

Rules are regular expressions per category (chest pain, stroke signs, suicidal
ideation, severe bleeding, breathing difficulty, anaphylaxis, overdose/poisoning, loss of
consciousness/seizure), following the warning signs public-health services list (e.g.
NHS "When to call 999", the American Heart Association / American Stroke Association
F.A.S.T. signs, the 988 Suicide & Crisis Lifeline). A match preceded closely by a
negation ("no chest pain", "denies suicidal thoughts") or by words of the past or of a
general question ("had a heart attack", "how is anaphylaxis treated") does not count.
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
        r"chest (?:\w+ ){0,3}(?:pain\w*|pressure|tight\w*|heav\w*|squeez\w*|hurt\w*|crush\w*)|"
        r"(?:pain|pressure|tightness|heaviness|squeezing) (?:\w+ ){0,2}(?:in|across|on) "
        r"(?:my|his|her|the) chest|clutch\w* (?:at )?(?:my|his|her|their) chest|"
        r"(?:sitting|weight|pressing) on (?:my|his|her) chest|"
        r"crushing (?:pain|pressure)|heart attack|"
        r"pain (?:\w+ ){0,2}(?:spreading|radiating|going|moving) (?:up |down )?(?:to|down|into) "
        r"(?:my |his |her |the )?(?:left )?(?:arm|jaw|neck)|(?:goes|spreads) (?:up )?into (?:my )?jaw",
        "Chest pain or pressure can be a heart attack. If it is happening now, "
        + EMERGENCY_NUMBER_NOTE
        + ".",
    ),
    "stroke": (
        r"(?:face|facial|smile|mouth) (?:is |looks |has )?(?:droop\w*|lopsided|dropped|uneven)|"
        r"(?:speech|words) (?:is |are |sounds? )?(?:slurred|garbled|jumbled)|slurred speech|"
        r"(?:can't|cannot|unable to) (?:speak|lift|raise|move) ?(?:(?:his|her|my|one|either) )?"
        r"(?:\w+ )?(?:arm|leg|words)?|"
        r"sudden(?:ly)? (?:\w+ ){0,3}(?:weak\w*|numb\w*|confus\w*|(?:loss of|lost) (?:vision|sight|balance)|"
        r"can't see|cannot see)|"
        r"(?:weakness|numbness) (?:in|of|on|down) (?:one|the left|the right|the left side of) "
        r"(?:side|arm|leg|my face)|having a stroke",
        "Face drooping, arm weakness or speech difficulty can be a stroke (F.A.S.T.). "
        "Time matters: " + EMERGENCY_NUMBER_NOTE + " now.",
    ),
    "suicidal_ideation": (
        r"suicid\w*|kill (?:myself|me)|end (?:my|it all|my own) life|end (?:it|things) (?:all )?"
        r"(?:tonight|today|now)|want to die|(?:don't|do not) want to (?:be alive|live|wake up)|"
        r"better off without me|(?:hurt|harm|cut|cutting|hurting|harming) myself|self[- ]harm|"
        r"no reason to live",
        "If you are thinking about suicide or harming yourself, you are not alone: call or "
        "text 988 (US Suicide & Crisis Lifeline), your local crisis line, or "
        + EMERGENCY_NUMBER_NOTE
        + ".",
    ),
    "severe_bleeding": (
        r"(?:severe|heavy|uncontrolled|massive) bleeding|"
        r"bleeding (?:\w+ ){0,3}(?:heavily|profusely|a lot|nonstop|non-stop|"
        r"(?:that )?(?:won't|will not|doesn't|does not|hasn't|can't) stop)|"
        r"blood (?:is )?(?:spurting|pouring|gushing|spraying|pumping)|"
        r"(?:vomiting|coughing up|throwing up) blood",
        "Severe or uncontrolled bleeding is an emergency: press firmly on the wound and "
        + EMERGENCY_NUMBER_NOTE
        + ".",
    ),
    "breathing": (
        r"(?:can't|cannot|can not|unable to|can barely|could barely) (?:\w+ )?breathe|"
        r"struggling (?:to|for) breath\w*|(?:gasping|fighting) for (?:air|breath)|"
        r"(?:can't|cannot) catch (?:my|his|her|their) breath|"
        r"severe (?:shortness of breath|difficulty breathing)|choking|turning blue|blue lips|"
        r"lips (?:look |are |turning |going )?blue",
        "Severe difficulty breathing is an emergency: " + EMERGENCY_NUMBER_NOTE + ".",
    ),
    "anaphylaxis": (
        r"anaphyla\w*|throat (?:is |feels like it's |feels like it is )?(?:closing|swelling)|"
        r"swollen (?:tongue|throat|lips)|(?:lips|tongue|throat|mouth|face)(?: and (?:\w+ ))? "
        r"(?:is |are )?(?:swelling|swollen)",
        "Throat or tongue swelling after an exposure can be anaphylaxis: use an adrenaline "
        "(epinephrine) auto-injector if one is prescribed and " + EMERGENCY_NUMBER_NOTE + ".",
    ),
    "overdose_poisoning": (
        r"overdos\w*|(?:took|taken|swallowed) too many (?:pills|tablets)|"
        r"(?:took|taken|swallowed) (?:a (?:whole )?bottle|all (?:of )?(?:my|his|her|the)|"
        r"(?:a )?(?:lot|handful) of|double (?:my|his|her|the)) (?:\w+ ){0,3}"
        r"(?:pills|tablets|dose|medicine|medication|insulin|paracetamol)|"
        r"(?:swallowed|drank|drunk|ate) (?:some |a )?(?:bleach|poison|drain cleaner|antifreeze|"
        r"weed killer)|poison(?:ed|ing)",
        "A possible overdose or poisoning needs urgent help: call a poison control centre "
        "(1-800-222-1222 in the US) or " + EMERGENCY_NUMBER_NOTE + ".",
    ),
    "unresponsive_seizure": (
        r"unconscious|unresponsive|passed out|(?:having|had) a (?:seizure|fit)|seizing|"
        r"convuls\w*|collapsed (?:and|on|at|in|while|after|during)\b|"
        r"\b(?:he|she|they|i|someone) (?:has |have |just |suddenly )*collapsed|(?:won't|will not|can't|cannot) (?:wake|be woken)|"
        r"not (?:responding|waking)|fainted|(?:shaking|jerking|fitting) (?:all over|uncontrollably)",
        "Loss of consciousness or a seizure needs urgent help: " + EMERGENCY_NUMBER_NOTE + ".",
    ),
}
_COMPILED = {k: re.compile(rf"\b(?:{rx})", re.IGNORECASE) for k, (rx, _) in _RULES.items()}
# Mentions of the past or questions about a condition in general ("I had a heart attack
# five years ago", "how is anaphylaxis treated"): information, not an emergency now.
_NOT_NOW = re.compile(
    r"\b(?:had (?:a|an)|history of|previous|prior|old|difference between|how is|how are|"
    r"what is|what are|years? ago|last (?:year|month))\b(?:\W+\w+){0,4}\W*$",
    re.IGNORECASE,
)
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
            before = text[max(0, m.start() - 40) : m.start()]
            if _NEGATION.search(before) or _NOT_NOW.search(before):
                continue
            flags.append(EmergencyFlag(category, m.group(0).lower(), _RULES[category][1]))
            break
    return flags


CATEGORIES: tuple[str, ...] = tuple(_RULES)
