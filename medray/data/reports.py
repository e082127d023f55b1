"""Free-text radiology reports: pull out the FINDINGS and IMPRESSION sections.

MIMIC-CXR reports are semi-structured: upper-case section headers followed by a colon
(``EXAMINATION:``, ``INDICATION:``, ``TECHNIQUE:``, ``COMPARISON:``, ``FINDINGS:``,
``IMPRESSION:``), sometimes with the text on the header's line, sometimes below it.
"""

from __future__ import annotations

import re

# A header: start of a line, 2+ upper-case words/characters, then a colon.
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]{1,40}?)[ \t]*:", re.MULTILINE)
FINDINGS_NAMES = ("FINDINGS", "FINDING")
IMPRESSION_NAMES = ("IMPRESSION", "IMPRESSIONS", "CONCLUSION", "CONCLUSIONS")


def _clean(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def report_sections(report: str) -> dict[str, str]:
    """Every ``HEADER: text`` section of a report, header upper-cased, text whitespace-normalised."""
    matches = list(_HEADER.finditer(report))
    out: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(report)
        name = _clean(m.group(1)).upper()
        body = _clean(report[m.end() : end])
        if body and name not in out:
            out[name] = body
    return out


def findings_impression(report: str) -> tuple[str | None, str | None]:
    """``(findings, impression)`` of a report; None for a section it lacks."""
    sections = report_sections(report)
    findings = next((sections[n] for n in FINDINGS_NAMES if n in sections), None)
    impression = next((sections[n] for n in IMPRESSION_NAMES if n in sections), None)
    return findings, impression
