"""Evaluation metrics and reports.

Modules (each small and pure; docs/evaluation.md lists every metric and
the reference it is tested against):

* ``predictions``: the prediction-file contract between batch inference and evaluation
  (writer, checked reader, refusal of files made for other data or models);
* ``vqa``: VQA-RAD / SLAKE protocol accuracy (normalisation, closed / open, breakdowns);
* ``structure``: JSON validity, box rate, box IoU with Hungarian matching;
* ``calibration``: risk-coverage curve, AURC, accuracy at confidence thresholds, ECE;
* ``faithfulness``: counterfactual flip rates (ROI vs random region), blank-image control;
* ``text``: BLEU (sacrebleu) and ROUGE (rouge-score) for generated text;
* ``mcq``: multiple-choice accuracy and perplexity;
* ``retrieval``: Recall@K from embeddings or ranked lists;
* ``errors``: failure kinds per row with advice;
* ``aggregate``: confidence-weighted majority vote across runs;
* ``metrics``: every metric of one run from its rows;
* ``report`` / ``compare``: Markdown + PNG + JSON report, two runs side by side.
"""
