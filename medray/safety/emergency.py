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
# The same categories in Chinese (SLAKE's second language); the notices stay English.
_RULES_ZH: dict[str, str] = {
    "chest_pain": r"胸(?:口|部)?(?:剧烈|突然|持续)?(?:疼痛|剧痛|痛|疼|发闷|闷痛|压迫)|心脏病发作|心梗",
    "stroke": r"中风|脑卒中|口齿不清|说话不清|嘴(?:巴)?歪|(?:一侧|半边|半身)(?:身体|手臂|胳膊|腿)?(?:无力|麻木|不能动)",
    "suicidal_ideation": r"自杀|不想活|轻生|结束(?:我的|自己的)?生命|伤害自己|自残|想死",
    "severe_bleeding": r"大出血|(?:出血|流血)不止|血流不止|吐血|咳血|呕血",
    "breathing": r"喘不过气|呼吸困难|无法呼吸|不能呼吸|窒息|嘴唇发紫",
    "anaphylaxis": r"过敏性休克|喉咙(?:肿|发紧|堵)|舌头(?:肿|发肿)",
    "overdose_poisoning": r"服药过量|过量服用|吃了(?:一整|整|一)瓶|吞了(?:一整|整|一)瓶|中毒|喝了(?:农药|漂白剂)",
    "unresponsive_seizure": r"昏迷|失去意识|不省人事|叫不醒|晕倒|昏倒|抽搐|癫痫发作",
}
_COMPILED = {
    k: [re.compile(rf"\b(?:{rx})", re.IGNORECASE), re.compile(_RULES_ZH[k])]
    for k, (rx, _) in _RULES.items()
}
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
_NOT_NOW_ZH = re.compile(
    r"(?:以前|曾经|之前|去年|几年前|病史|什么是|如何|怎么|怎样)[^，。,.!?！？]{0,8}$"
)
_NEGATION_ZH = re.compile(r"(?:没有|没|无|不|否认|并未|未)[^，。,.!?！？]{0,3}$")
# Chinese puts the general question after the condition ("中风怎么治疗?", how is a stroke
# treated); "怎么办" (what do I do) is left out: it is asked in the moment.
_GENERAL_AFTER_ZH = re.compile(
    r"^[^，。,.!?！？]{0,4}(?:怎么治疗|如何治疗|的治疗|的症状|是什么|的原因|如何预防|怎么预防|有哪些)"
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
    for category, rules in _COMPILED.items():
        match = next((m for rx in rules for m in rx.finditer(text) if _now(text, m)), None)
        if match is not None:
            flags.append(EmergencyFlag(category, match.group(0).lower(), _RULES[category][1]))
    return flags


def _now(text: str, m: re.Match[str]) -> bool:
    """Match ``m`` is not negated nor about the past or the condition in general."""
    before = text[max(0, m.start() - 40) : m.start()]
    if any(rx.search(before) for rx in (_NEGATION, _NOT_NOW, _NEGATION_ZH, _NOT_NOW_ZH)):
        return False
    return not _GENERAL_AFTER_ZH.search(text[m.end() : m.end() + 20])


CATEGORIES: tuple[str, ...] = tuple(_RULES)
