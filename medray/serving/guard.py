"""The Guard: the safety checks of ``medray.safety`` behind one object."""

from __future__ import annotations

import logging
import time

from medray.safety import (
    DomainClassifier,
    SafetyPolicy,
    SafetyReport,
    assess_answer,
    assess_request,
)

log = logging.getLogger(__name__)


class Guard:
    """Domain control, emergency detection, drug and dose checks, disclaimer.

    Args:
        policy: which checks run and their thresholds; ``policy.embedder`` names the
            sentence embedder of the domain classifier ("" = keyword rules only).
    """

    def __init__(self, policy: SafetyPolicy | None = None) -> None:
        t0 = time.perf_counter()
        self.policy = policy or SafetyPolicy()
        self.classifier = DomainClassifier.from_preset(self.policy.embedder, self.policy)
        self.classifier.classify("warm-up: is there an effusion?")  # embeds the exemplars
        log.info("guard ready in %.1fs", time.perf_counter() - t0)

    def check_request(self, question: str) -> SafetyReport:
        """Checks before a model sees the request (may refuse it)."""
        return assess_request(question, self.classifier, self.policy)

    def check_answer(self, text: str) -> SafetyReport:
        """Checks on generated text (interactions, doses, emergencies)."""
        return assess_answer(text, self.policy)
