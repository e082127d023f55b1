"""Batch inference: the reasoner over a dataset with Ray Data actors.

``inputs`` turns a preprocessed split or a JSONL folder of images + questions into rows,
``predictor`` is the Ray Data callable class that answers them with one or more models
(base, LoRA adapter, merged) through the reasoner's contract
(:mod:`medray.contracts.reasoner`: prompt, parser, answer confidence; counterfactual
images from :mod:`medray.contracts.counterfactual`), the one loader and the one generate
path. ``jobs/batch_infer.py`` wires them into a job that writes predictions folders in
the ``medray-predictions/1`` contract (``medray/eval/predictions.py``).
"""
