"""BLEU and ROUGE for generated text (reports, summaries), computed by the reference libraries.

BLEU is sacrebleu's with its defaults (13a tokenisation, ``exp`` smoothing), corpus-level
and the mean of sentence BLEU, on the 0-100 scale sacrebleu reports. ROUGE-1/2/L are
Google's ``rouge-score`` F-measures with the Porter stemmer, averaged over rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} generated texts but {len(refs)} references")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float | None:
    """sacrebleu corpus BLEU (0-100) of generated texts against one reference each."""
    import sacrebleu

    _check(hyps, refs)
    if not hyps:
        return None
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)


def mean_sentence_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float | None:
    """Mean of sacrebleu sentence BLEU (0-100) over rows."""
    import sacrebleu

    _check(hyps, refs)
    if not hyps:
        return None
    scores = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs, strict=True)]
    return float(sum(scores) / len(scores))


def rouge(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float | None]:
    """Mean ROUGE-1/2/L F-measures (0-1, stemmed) over rows."""
    from rouge_score import rouge_scorer

    _check(hyps, refs)
    if not hyps:
        return dict.fromkeys(ROUGE_TYPES)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for h, r in zip(hyps, refs, strict=True):
        scores = scorer.score(r, h)  # rouge-score takes (target, prediction)
        for t in ROUGE_TYPES:
            totals[t] += scores[t].fmeasure
    return {t: totals[t] / len(hyps) for t in ROUGE_TYPES}


def text_metrics(hyps: Sequence[str | None], refs: Sequence[str | None]) -> dict[str, Any] | None:
    """BLEU and ROUGE over the rows that have a reference text (None when no row has).

    A missing generated text against a present reference scores as the empty string, so
    rows the model failed on count against it.
    """
    pairs = [(h or "", r) for h, r in zip(hyps, refs, strict=True) if r]
    if not pairs:
        return None
    h, r = [p[0] for p in pairs], [p[1] for p in pairs]
    return {
        "n": len(pairs),
        "bleu": corpus_bleu(h, r),
        "sentence_bleu": mean_sentence_bleu(h, r),
        **rouge(h, r),
    }
