"""Safety: domain control, emergency detection, drug checks and the safety report.

Pure functions and small classes; the only model is the optional sentence embedder of
the domain classifier. Every answer MedRay gives carries a :class:`SafetyReport` with
the research-use disclaimer.
"""

from medray.safety.domain import (
    DomainClassifier,
    DomainDecision,
    decide,
    keyword_evidence,
    strip_injection,
)
from medray.safety.drugs import (
    DoseWarning,
    InteractionWarning,
    check_doses,
    check_interactions,
    find_drugs,
)
from medray.safety.emergency import EmergencyFlag, detect_emergencies
from medray.safety.policy import SafetyPolicy
from medray.safety.report import (
    RISK_CAUTION,
    RISK_INFO,
    RISK_NONE,
    RISK_URGENT,
    SafetyReport,
    assess_answer,
    assess_request,
    merge,
    refusal_message,
)

__all__ = [
    "RISK_CAUTION",
    "RISK_INFO",
    "RISK_NONE",
    "RISK_URGENT",
    "DomainClassifier",
    "DomainDecision",
    "DoseWarning",
    "EmergencyFlag",
    "InteractionWarning",
    "SafetyPolicy",
    "SafetyReport",
    "assess_answer",
    "assess_request",
    "check_doses",
    "check_interactions",
    "decide",
    "detect_emergencies",
    "find_drugs",
    "keyword_evidence",
    "merge",
    "refusal_message",
    "strip_injection",
]
