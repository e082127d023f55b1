"""BLEU / ROUGE wrappers equal direct sacrebleu and rouge-score calls."""

from __future__ import annotations

import pytest

from medray.eval.text import corpus_bleu, mean_sentence_bleu, rouge, text_metrics

pytestmark = pytest.mark.unit

REFS = [
    "Small left pleural effusion. No pneumothorax.",
    "The heart is enlarged. Lungs are clear.",
    "No acute cardiopulmonary process.",
    "Right lower lobe consolidation consistent with pneumonia.",
]
HYPS = [
    "Small left pleural effusion without pneumothorax.",
    "Cardiomegaly. The lungs are clear.",
    "No acute process.",
    "Consolidation in the right lower lobe, likely pneumonia.",
]


def test_bleu_equals_sacrebleu():
    import sacrebleu

    assert corpus_bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    direct = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS, strict=True)]
    assert mean_sentence_bleu(HYPS, REFS) == pytest.approx(sum(direct) / len(direct))
    assert 5 < corpus_bleu(HYPS, REFS) < 95  # partly right, as the fixture is
    assert corpus_bleu(REFS, REFS) == pytest.approx(100.0)


def test_rouge_equals_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, h) for h, r in zip(HYPS, REFS, strict=True)]
    ours = rouge(HYPS, REFS)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert ours[key] == pytest.approx(sum(s[key].fmeasure for s in scores) / len(scores))
    assert rouge(REFS, REFS) == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    # argument order matters for precision/recall: the wrapper passes (target, prediction)
    assert rouge(["effusion"], ["small left effusion"])["rouge1"] == pytest.approx(0.5)


def test_text_metrics_counts_missing_generations_as_empty():
    m = text_metrics([HYPS[0], None, "unused"], [REFS[0], REFS[1], None])
    assert m["n"] == 2
    assert m["bleu"] == pytest.approx(corpus_bleu([HYPS[0], ""], REFS[:2]))
    assert m["rougeL"] == pytest.approx(rouge([HYPS[0], ""], REFS[:2])["rougeL"])
    assert text_metrics([None], [None]) is None
    with pytest.raises(ValueError, match="2 generated texts but 1 references"):
        corpus_bleu(["a", "b"], ["a"])
