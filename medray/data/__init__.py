"""Datasets: readers of the real on-disk layouts, the unified schema, preprocessing
transforms and sinks, outputs, and the synthetic generator.

Modules: :mod:`~medray.data.schema` (the contract), :mod:`~medray.data.readers` (one per
layout), :mod:`~medray.data.collect` (listing), :mod:`~medray.data.transform` and
:mod:`~medray.data.images` (per-record work), :mod:`~medray.data.sink` and
:mod:`~medray.data.finalize` (writing, dedup), :mod:`~medray.data.output` (atomic commit,
validated reads), :mod:`~medray.data.synth` (synthetic datasets), and
:mod:`~medray.data.text_qa` (finding descriptions of the synthetic MedMCQA questions).
"""
