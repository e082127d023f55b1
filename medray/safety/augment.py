"""Tuning-data augmentation for the domain head: wrap requests in the other side's words.

A non-medical request wrapped in clinical framing stays non-medical ("As a cardiologist,
how do I bake bread?"); a medical question with everyday context stays medical ("Before my
holiday next week: is a 4 mm nodule dangerous?"). A role ("As a cardiologist, ...", "You
are a GP. ...") wraps both sides alike, so a role says nothing about the domain and the
request decides: a head trained with roles on the non-medical side only learnt to refuse
medical role instructions ("Answer as a chest radiology tutor."). Each tuning prompt gets a few seeded
wraps; a wrap keeps its source prompt's family, so grouped cross-validation never sees a
wrap of a test-fold prompt in training. Applied to the tuning split only
(:mod:`medray.safety.train_head`). The framings are written for this module, not taken
from the held-out split.
"""

from __future__ import annotations

import random

ROLES = (
    "cardiologist", "GP", "physiotherapist", "pharmacist", "paramedic", "midwife",
    "surgeon", "oncology nurse", "radiographer", "junior doctor", "dentist", "psychiatrist",
)  # fmt: skip
CLINICAL_CONTEXTS = (
    "my chest X-ray came back clear", "I'm waiting for my CT results",
    "my MRI is booked for Friday", "I've just left the hospital ward",
    "my blood tests are normal", "I'm recovering from knee surgery",
    "the scan of my abdomen was fine", "my oncologist appointment went well",
)  # fmt: skip
ROLE_WRAPS = (  # both sides: a role is not a topic
    "As a {role}, {req}",
    "{Role} here: {req}",
    "Quick question from a {role}: {req}",
    "You are a {role}. {req}",
    "Answer as a {role} would: {req}",
)
MEDICAL_WRAPS = (
    *ROLE_WRAPS,
    "{req} Asking for my {role} colleague.",
    "Since {ctx}, {req}",
    "{Ctx}. Anyway, {req}",
    "Clinically speaking, {req}",
    "For the patients in my {role} clinic, {req}",
)
EVERYDAY_CONTEXTS = (
    "before my holiday next week", "my football coach wants to know",
    "while I'm cooking dinner", "I read about it on a travel blog",
    "my boss asked me at work", "after my run this morning",
    "my grandson searched online but got confused", "between two video calls",
)  # fmt: skip
EVERYDAY_WRAPS = (
    "{Ctx}: {req}",
    "{req} ({ctx})",
    "Quick question, {ctx}. {req}",
    "{req} I ask because {ctx}.",
)


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() else s


def wrap(text: str, medical: bool, rng: random.Random) -> str:
    """One wrapped variant of ``text`` (clinical framing for non-medical text, else everyday)."""
    if medical:
        tpl = rng.choice(EVERYDAY_WRAPS + ROLE_WRAPS)
        ctx, role = rng.choice(EVERYDAY_CONTEXTS), rng.choice(ROLES)
    else:
        tpl, role = rng.choice(MEDICAL_WRAPS), rng.choice(ROLES)
        ctx = rng.choice(CLINICAL_CONTEXTS)
    req = _lower_first(text) if tpl.index("{req}") > 0 else text
    return tpl.format(
        req=req, role=role, Role=role[:1].upper() + role[1:], ctx=ctx, Ctx=ctx[:1].upper() + ctx[1:]
    )


def augment(
    texts: list[str], labels: list[bool], groups: list[str], per_prompt: int = 1, seed: int = 0
) -> tuple[list[str], list[bool], list[str]]:
    """The originals plus ``per_prompt`` seeded wraps of each, with labels and families."""
    rng = random.Random(seed)
    out_t, out_y, out_g = list(texts), list(labels), list(groups)
    for t, y, g in zip(texts, labels, groups, strict=True):
        for _ in range(per_prompt):
            out_t.append(wrap(t, y, rng))
            out_y.append(y)
            out_g.append(g)
    return out_t, out_y, out_g
