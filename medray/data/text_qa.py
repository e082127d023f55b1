"""Descriptions of chest X-ray findings (finding name -> phrases that describe it).

The synthetic MedMCQA generator (``medray/data/synth/layouts.py``) asks which finding a
description names, so a model that learns the mapping gets the answers right and one
that ignores the question cannot beat the most common finding.
"""

from __future__ import annotations

DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "pleural effusion": (
        "fluid collecting in the pleural space",
        "blunting of the costophrenic angle with a meniscus",
    ),
    "pneumothorax": (
        "air in the pleural space with a visible pleural line",
        "absent lung markings beyond a sharp pleural edge",
    ),
    "cardiomegaly": (
        "a cardiothoracic ratio above one half",
        "an enlarged cardiac silhouette on a PA film",
    ),
    "consolidation": (
        "airspace opacity with air bronchograms",
        "a dense lobar opacity replacing aerated lung",
    ),
    "pulmonary nodule": (
        "a small round opacity under three centimetres",
        "a well-defined rounded density within the lung",
    ),
    "atelectasis": (
        "volume loss with displacement of the fissures",
        "collapse of lung tissue with shift toward the affected side",
    ),
}
