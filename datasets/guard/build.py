"""Build the guard evaluation set: ``datasets/guard/guard.jsonl``.

    python datasets/guard/build.py                  # reads ../shared/data, writes guard.jsonl
    python datasets/guard/build.py --shared /path/to/shared/data --check

Medical prompts: every unique English question of the real sample sets (VQA-RAD, SLAKE,
PubMedQA in ``../shared/data``) plus the authored medical prompts
(``authored_medical.txt``: patients' questions, medical questions in words of other topics,
emergencies, drug interactions and doses). Non-medical prompts: ``authored_other.txt``
(ordinary requests, near-misses, injection attempts that wrap a non-medical request in
medical words).

Split: each prompt belongs to a family (an image for VQA-RAD / SLAKE, a PubMed id, an
authored block; emergency, drug and dose blocks in sub-families of three lines). A family is
held out when ``sha256("guard-v1:" + family)`` falls in the lowest 40 % of the hash
range, so no phrasing, topic or image of the held-out figure occurs in the tuning split.
Exact duplicates (case and punctuation ignored) keep their first occurrence only.
``--check`` fails if the written file differs from what the sources give now.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "guard.jsonl"
SEED = "guard-v1"
HELDOUT_FRACTION = 0.4
# Rule-checked kinds are split in sub-families of this many lines (their blocks list
# distinct phrasings of one category, not paraphrases of one prompt).
SUBFAMILY_KINDS = {"emergency", "calm", "interaction", "no_interaction", "dose", "dose_ok"}
SUBFAMILY_SIZE = 3
MEDICAL_KINDS = {"consumer", "clinician", "crossover"} | SUBFAMILY_KINDS
OTHER_KINDS = {"general", "near_miss", "injection"}


def norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", re.sub(r"\s+", " ", text.lower())).strip()


def split_of(family: str) -> str:
    h = int.from_bytes(hashlib.sha256(f"{SEED}:{family}".encode()).digest()[:8], "big")
    return "heldout" if h / 2**64 < HELDOUT_FRACTION else "tune"


def row(text: str, medical: bool, source: str, family: str, kind: str, **labels) -> dict:
    return {
        "text": " ".join(text.split()),
        "medical": medical,
        "source": source,
        "family": family,
        "kind": kind,
        "emergency": labels.get("emergency", ""),
        "interaction": kind == "interaction",
        "dose": kind == "dose",
    }


def real_questions(shared: Path) -> list[dict]:
    """Unique English questions of the real sample sets, families by image / PubMed id."""
    rows: list[dict] = []
    for name in ("trainset.json", "testset.json"):
        for r in json.loads((shared / "vqa_rad" / name).read_text(encoding="utf-8")):
            rows.append(row(r["question"], True, "vqa_rad", f"vqa_rad:{r['image_name']}", "vqa"))
    for name in ("train.json", "validate.json", "test.json"):
        for r in json.loads((shared / "slake" / name).read_text(encoding="utf-8")):
            if r["q_lang"] == "en":
                rows.append(row(r["question"], True, "slake", f"slake:{r['img_id']}", "vqa"))
    pqa = json.loads((shared / "pubmedqa" / "data" / "ori_pqal.json").read_text(encoding="utf-8"))
    for pmid, r in pqa.items():
        rows.append(row(r["QUESTION"], True, "pubmedqa", f"pubmedqa:{pmid}", "research"))
    return rows


def authored(path: Path, medical: bool) -> list[dict]:
    """Blocks ``## family | kind [| key=value]`` followed by one prompt per line."""
    rows: list[dict] = []
    family, kind, labels, n = "", "", {}, 0
    allowed = MEDICAL_KINDS if medical else OTHER_KINDS
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line.startswith("## "):
            parts = [p.strip() for p in line[3:].split("|")]
            if len(parts) < 2 or parts[1] not in allowed:
                raise ValueError(
                    f"{path.name}:{lineno}: expected '## family | kind', kind in {sorted(allowed)}"
                )
            family, kind, n = parts[0], parts[1], 0
            labels = dict(p.split("=", 1) for p in parts[2:])
            if kind == "emergency" and not labels.get("emergency"):
                raise ValueError(
                    f"{path.name}:{lineno}: an emergency block needs emergency=<category>"
                )
        elif line and not line.startswith("#"):
            if not family:
                raise ValueError(f"{path.name}:{lineno}: prompt before the first '## family' line")
            fam = f"{family}/{n // SUBFAMILY_SIZE}" if kind in SUBFAMILY_KINDS else family
            rows.append(row(line, medical, "authored", fam, kind, **labels))
            n += 1
    return rows


def build(shared: Path) -> list[dict]:
    rows = (
        real_questions(shared)
        + authored(HERE / "authored_medical.txt", True)
        + authored(HERE / "authored_other.txt", False)
    )
    seen: dict[str, dict] = {}
    for r in rows:
        key = norm(r["text"])
        if key and key not in seen:
            seen[key] = r
    out = list(seen.values())
    for i, r in enumerate(out):
        r["id"] = f"g{i:04d}"
        r["split"] = split_of(r["family"])
    return [{"id": r.pop("id"), **r} for r in out]


def dumps(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="fail if --out is not up to date")
    args = ap.parse_args(argv)
    if not (args.shared / "vqa_rad").is_dir():
        print(f"no shared data at {args.shared} (pass --shared)", file=sys.stderr)
        return 2
    text = dumps(build(args.shared))
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{args.out} is stale: run build.py")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    rows = [json.loads(x) for x in text.splitlines()]
    for split in ("tune", "heldout"):
        part = [r for r in rows if r["split"] == split]
        med = sum(r["medical"] for r in part)
        print(f"{split}: {len(part)} prompts, {med} medical, {len(part) - med} non-medical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
