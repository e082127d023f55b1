"""The safety report attached to every answer, and the two checks that build it.

``assess_request`` runs before a model sees a request (domain control, emergency
detection, prompt-injection stripping, drug interactions and doses named in the request);
``assess_answer`` runs on generated text (drug interactions, doses, emergencies); ``merge``
combines them. Every report carries
the research-use :data:`medray.DISCLAIMER`.

Risk levels: 0 nothing found, 1 informational (injection text ignored), 2 caution
(interaction or dose above the maximum), 3 urgent (possible emergency), and requests
refused by domain control are reported with ``refused`` set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from medray import DISCLAIMER
from medray.safety.domain import DomainClassifier, DomainDecision, strip_injection
from medray.safety.drugs import DoseWarning, InteractionWarning, check_doses, check_interactions
from medray.safety.emergency import EmergencyFlag, detect_emergencies
from medray.safety.policy import SafetyPolicy

RISK_NONE, RISK_INFO, RISK_CAUTION, RISK_URGENT = 0, 1, 2, 3

REFUSAL_PREFIX = (
    "MedRay only answers medical and radiology questions (medical images, findings, "
    "diseases, symptoms, medications)."
)


def refusal_message(decision: DomainDecision) -> str:
    """The message a user gets when domain control refuses a request."""
    return (
        f"{REFUSAL_PREFIX} This request was not processed because it does not look "
        f"medical: {decision.reason}. Rephrase it as a question about a medical image or a "
        "medical topic."
    )


@dataclass(frozen=True)
class SafetyReport:
    """What the guard found; attached to every answer.

    Attributes:
        risk_level: 0 none, 1 informational, 2 caution, 3 urgent.
        warnings: one human-readable line per finding.
        refused: the request was refused (domain control or injection policy).
        refusal: the refusal message, "" if not refused.
        domain: the domain-control decision (None when not checked).
        emergencies: possible emergencies in the request or answer.
        notices: what to do about them (emergency numbers).
        interactions: drug interactions named in the request or the answer.
        doses: doses above the maximum in the request or the answer.
        injection: prompt-injection patterns found in the request (ignored).
        disclaimer: the research-use disclaimer, always present.
    """

    risk_level: int = RISK_NONE
    warnings: tuple[str, ...] = ()
    refused: bool = False
    refusal: str = ""
    domain: DomainDecision | None = None
    emergencies: tuple[EmergencyFlag, ...] = ()
    notices: tuple[str, ...] = ()
    interactions: tuple[InteractionWarning, ...] = ()
    doses: tuple[DoseWarning, ...] = ()
    injection: tuple[str, ...] = ()
    disclaimer: str = field(default=DISCLAIMER)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``risk_level`` and ``warnings`` first, as in the /generate contract)."""
        return {
            "risk_level": self.risk_level,
            "warnings": list(self.warnings),
            "refused": self.refused,
            "refusal": self.refusal,
            "domain": self.domain.to_dict() if self.domain else None,
            "emergencies": [e.to_dict() for e in self.emergencies],
            "notices": list(self.notices),
            "interactions": [i.to_dict() for i in self.interactions],
            "doses": [d.to_dict() for d in self.doses],
            "injection": list(self.injection),
            "disclaimer": self.disclaimer,
        }


def _emergency_part(text: str, where: str) -> tuple[tuple[EmergencyFlag, ...], list[str]]:
    flags = tuple(detect_emergencies(text))
    return flags, [f"possible emergency in the {where}: {f.category}" for f in flags]


def _drug_part(
    text: str, where: str
) -> tuple[tuple[InteractionWarning, ...], tuple[DoseWarning, ...], list[str]]:
    interactions, doses = tuple(check_interactions(text)), tuple(check_doses(text))
    lines = [f"{x.message()} (in the {where})" for x in (*interactions, *doses)]
    return interactions, doses, lines


def assess_request(
    question: str,
    classifier: DomainClassifier | None = None,
    policy: SafetyPolicy | None = None,
) -> SafetyReport:
    """Check a request before any model sees it.

    Args:
        question: the user's text ("" when only an image is sent).
        classifier: domain classifier (keyword rules only if None).
        policy: which checks run.
    """
    policy = policy or (classifier.policy if classifier else SafetyPolicy())
    warnings: list[str] = []
    risk = RISK_NONE
    decision: DomainDecision | None = None
    _, injection = strip_injection(question)
    if injection:
        warnings.append(
            "instructions to the system inside the request were ignored: " + ", ".join(injection)
        )
        risk = RISK_INFO
    content = _check_content(question, "request", policy)
    warnings += content.warnings
    refused, refusal = False, ""
    if policy.domain_control:
        decision = (classifier or DomainClassifier(None, policy)).classify(question)
        # A described emergency is always answered with its notice, never refused.
        if not decision.medical and not content.emergencies:
            refused, refusal = True, refusal_message(decision)
            warnings.append("request refused: not a medical request")
    if injection and policy.block_on_injection and not refused:
        refused = True
        refusal = "The request contains instructions to the system and was not processed."
    return replace(
        content,
        risk_level=max(risk, content.risk_level),
        warnings=tuple(warnings),
        refused=refused,
        refusal=refusal,
        domain=decision,
        injection=tuple(injection),
    )


def assess_answer(text: str, policy: SafetyPolicy | None = None) -> SafetyReport:
    """Check generated text: drug interactions, doses above the maximum, emergencies."""
    return _check_content(text, "answer", policy or SafetyPolicy())


def _check_content(text: str, where: str, policy: SafetyPolicy) -> SafetyReport:
    """The checks a request and an answer share: drug interactions and doses (risk
    caution), emergencies (risk urgent, with their notices), each warning naming ``where``."""
    warnings: list[str] = []
    risk = RISK_NONE
    interactions: tuple[InteractionWarning, ...] = ()
    doses: tuple[DoseWarning, ...] = ()
    if policy.drug_checks:
        interactions, doses, lines = _drug_part(text, where)
        warnings += lines
        if lines:
            risk = RISK_CAUTION
    emergencies: tuple[EmergencyFlag, ...] = ()
    if policy.emergency_detection:
        emergencies, lines = _emergency_part(text, where)
        warnings += lines
        if emergencies:
            risk = RISK_URGENT
    return SafetyReport(
        risk_level=risk,
        warnings=tuple(warnings),
        emergencies=emergencies,
        notices=tuple(dict.fromkeys(e.notice for e in emergencies)),
        interactions=interactions,
        doses=doses,
    )


def merge(*reports: SafetyReport) -> SafetyReport:
    """Combine reports (request + answer): highest risk, all findings, first domain decision."""
    if not reports:
        return SafetyReport()
    first = reports[0]
    out = replace(
        first,
        risk_level=max(r.risk_level for r in reports),
        warnings=tuple(dict.fromkeys(w for r in reports for w in r.warnings)),
        refused=any(r.refused for r in reports),
        refusal=next((r.refusal for r in reports if r.refusal), ""),
        domain=next((r.domain for r in reports if r.domain), None),
        emergencies=tuple(e for r in reports for e in r.emergencies),
        notices=tuple(dict.fromkeys(n for r in reports for n in r.notices)),
        interactions=tuple(dict.fromkeys(i for r in reports for i in r.interactions)),
        doses=tuple(dict.fromkeys(d for r in reports for d in r.doses)),
        injection=tuple(dict.fromkeys(i for r in reports for i in r.injection)),
        disclaimer=DISCLAIMER,
    )
    return out
