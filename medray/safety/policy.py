"""The safety policy: the few knobs of the guard, as a frozen config."""

from __future__ import annotations

from dataclasses import dataclass

from medray.config import ConfigError


@dataclass(frozen=True)
class SafetyPolicy:
    """Settings of the guard (``medray.safety``).

    Attributes:
        domain_control: refuse requests that are not about medicine or radiology.
        embedder: sentence-embedder preset for the domain classifier ("" = keyword
            rules only).
        domain_margin: fallback without the domain head file (``medray/safety/
            domain_head.json``, or one trained for another embedder): a request with mixed
            or no keyword evidence is medical when its best similarity to the medical
            exemplars exceeds the best similarity to the non-medical ones by this much.
        min_medical_similarity: ... and its best medical similarity is at least this.
        domain_threshold: decision threshold on the domain head's P(medical); None uses
            the threshold chosen by cross-validation when the head was trained.
        emergency_detection: add an emergency notice when a request or answer
            describes a possible emergency.
        drug_checks: check the request and generated text for known interactions and
            over-maximum doses.
        block_on_injection: refuse a request that contains prompt-injection text (by
            default injection text is only stripped and reported, never obeyed).
    """

    domain_control: bool = True
    embedder: str = "minilm-l6"
    domain_margin: float = 0.05
    min_medical_similarity: float = 0.25
    domain_threshold: float | None = None
    emergency_detection: bool = True
    drug_checks: bool = True
    block_on_injection: bool = False

    def __post_init__(self) -> None:
        if self.domain_threshold is not None and not 0.0 < self.domain_threshold < 1.0:
            raise ConfigError(f"domain_threshold must lie in (0, 1), got {self.domain_threshold}")
        if not -1.0 <= self.domain_margin <= 1.0:
            raise ConfigError(f"domain_margin must lie in [-1, 1], got {self.domain_margin}")
        if not -1.0 <= self.min_medical_similarity <= 1.0:
            raise ConfigError(
                f"min_medical_similarity must lie in [-1, 1], got {self.min_medical_similarity}"
            )
