"""The Ray Data callable class of batch inference for the text models (summariser, QA).

:class:`TextPredictor` is :class:`~medray.infer.predictor.VQAPredictor`'s counterpart for
the two text LMs: it loads every configured model once per actor through the one loader
(:class:`~medray.models.finetuned.AdapterHost`, kind ``lm``), and for each batch builds
each row's prompt with the model's contract (:func:`medray.train.sft_tasks.prompt_for`:
the summariser's steps from a report's findings, the QA prompt with lettered options),
generates greedily through the one generate path with the contract's length (what
training's evaluation and the Serve deployments do), parses the completion with the
contract's parser, and scores the reference completion teacher-forced
(:func:`medray.models.generate.completion_nll`: ``nll`` and ``n_tokens``, for perplexity).

Per task:

* ``summariser`` (``report`` rows): ``generated_text`` is the summary,
  ``reference_text`` the impression, ``input_text`` the findings;
* ``medqa`` (``mcq`` rows): ``mcq_pred`` is the option letter the completion starts with,
  ``pred_answer`` that option's text, ``parse_ok`` whether the letter names an option;
  ``generated_text`` / ``reference_text`` the explanation and the rationale where the row
  has one; ``input_text`` the question.

A row the contract cannot use (a report without findings or impression, a question
without options or answer) comes back with ``error`` set (``"input: ..."``): never
dropped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from medray.contracts import medqa, summariser
from medray.eval.predictions import REFERENCE_COLUMNS, unreadable_row
from medray.infer.predictor import ModelEntry, actor_name, node_name, output_schema, pin_threads
from medray.models.generate import GenerationParams, completion_nll, generate
from medray.train.sft_tasks import ROW_TASK, prompt_for, training_row, usable

REF_NAMES = tuple(c[0] for c in REFERENCE_COLUMNS)
TEXT_TASKS = ("summariser", "medqa")
TEXT_COLUMNS = (
    "mcq_pred",
    "nll",
    "n_tokens",
    "reference_text",
    "generated_text",
    "input_text",
    "finish_reason",
)
CONTRACT_TOKENS = {"summariser": summariser.MAX_NEW_TOKENS, "medqa": medqa.MAX_NEW_TOKENS}
# The input columns a text task needs besides the reference ones.
INPUT_COLUMNS = ("findings", "impression", "rationale")


def unusable_reason(task: str, row: Mapping[str, Any]) -> str:
    """Why the contract of ``task`` cannot use ``row`` ("" when it can)."""
    if usable(task, row):  # type: ignore[arg-type]
        return ""
    if row.get("task") != ROW_TASK[task]:
        return f"input: a {row.get('task')!r} row, the {task} answers {ROW_TASK[task]!r} rows"
    if task == "summariser":
        return "input: the report needs findings (the prompt) and an impression (the reference)"
    return "input: the question needs a text, two or more options and its answer"


def text_prediction(task: str, row: Mapping[str, Any], text: str, finish: str) -> dict[str, Any]:
    """The prediction columns of one text completion (without nll and latency)."""
    rec: dict[str, Any] = {
        "raw_text": text,
        "parse_errors": [],
        "repaired": [],
        "pred_caption": None,
        "pred_reasoning": [],
        "pred_boxes": [],
        "confidence": None,
        "finish_reason": finish,
        "error": "",
    }
    if task == "summariser":
        summary = summariser.parse(text)
        return rec | {
            "parse_ok": bool(summary),
            "parsed": json.dumps({"summary": summary}) if summary else None,
            "pred_answer": summary or None,
            "generated_text": summary,
            "reference_text": " ".join(str(row["impression"]).split()),
            "input_text": " ".join(str(row["findings"]).split()),
        }
    choices = list(row["choices"])
    ans = medqa.parse(text, has_choices=True)
    idx = "ABCDEFGHIJKLMNOPQRSTUVWXYZ".find(ans.letter) if ans.letter else -1
    ok = 0 <= idx < len(choices)
    rationale = " ".join(str(row.get("rationale") or "").split())
    return rec | {
        "parse_ok": ok,
        "parsed": json.dumps({"letter": ans.letter, "answer": ans.answer}) if ok else None,
        "parse_errors": [] if ok else ["the completion does not start with an option letter"],
        "pred_answer": choices[idx] if ok else (ans.answer or None),
        "mcq_pred": ans.letter if ok else None,
        "generated_text": ans.explanation if rationale else None,
        "reference_text": rationale or None,
        "input_text": " ".join(str(row.get("question") or "").split()),
    }


class TextPredictor:
    """Ray Data callable class: a pyarrow batch of ``report`` or ``mcq`` rows -> prediction
    rows of every configured text model.

    Args:
        models: ``[{"label", "model", "adapter"}]`` (text LMs; adapters share their base).
        task: ``summariser`` or ``medqa``: the contract (prompt, parser, length).
        max_new_tokens: 0: the contract's length (what serving generates).
        num_cpus: the actor's CPU reservation (torch threads).
        device: ``cpu`` or ``cuda``.
    """

    def __init__(
        self,
        models: Sequence[Mapping[str, Any]],
        task: str,
        max_new_tokens: int = 0,
        num_cpus: float = 1.0,
        device: str = "cpu",
    ) -> None:
        from medray.models.finetuned import AdapterHost

        if task not in TEXT_TASKS:
            raise ValueError(f"task must be one of {TEXT_TASKS}, got {task!r}")
        self.task = task
        self.threads = pin_threads(num_cpus)
        self.params = GenerationParams(max_new_tokens or CONTRACT_TOKENS[task])
        self.entries = [
            ModelEntry(m["label"], m["model"], m.get("adapter") or None) for m in models
        ]
        self.hosts: dict[str, AdapterHost] = {}
        for base in dict.fromkeys(e.model for e in self.entries):
            adapters = {e.label: e.adapter for e in self.entries if e.model == base and e.adapter}
            self.hosts[base] = AdapterHost(base, adapters, kind="lm", device=device)
        for e in self.entries:  # a bad adapter fails the actor at start
            if e.adapter:
                self.hosts[e.model].load(e.label)
        self.schema = output_schema(("language", "node", *TEXT_COLUMNS))
        try:
            self.node, self.actor = node_name(), actor_name()
        except Exception:  # outside Ray (unit tests)
            self.node, self.actor = "local", f"pid-{os.getpid()}"

    def _run(self, entry: ModelEntry, prompts: list[str], targets: list[str]):
        host = self.hosts[entry.model]
        adapter = entry.label if entry.adapter else None
        tok = host.processing_for(adapter)
        t0 = time.perf_counter()
        with host.lock, host.active(adapter) as model:
            gens = generate(model, tok, prompts, (), self.params)
            nll = completion_nll(model, tok, prompts, targets)
        return gens, nll, time.perf_counter() - t0

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        reasons = [unusable_reason(self.task, r) for r in rows]
        ok = [i for i, why in enumerate(reasons) if not why]
        prompts = [prompt_for(self.task, rows[i]) for i in ok]  # type: ignore[arg-type]
        # The reference completion exactly as training saw it (the contract's target).
        targets = [training_row(self.task, rows[i])["completion"] for i in ok]  # type: ignore[arg-type]
        out: list[dict[str, Any]] = []
        for entry in self.entries:
            preds: dict[int, dict[str, Any]] = {}
            if ok:
                gens, nll, secs = self._run(entry, prompts, targets)
                for i, gen, (loss, n) in zip(ok, gens, nll, strict=True):
                    preds[i] = text_prediction(self.task, rows[i], gen.text, gen.finish_reason)
                    preds[i] |= {"nll": loss, "n_tokens": n, "latency_ms": 1000 * secs / len(ok)}
            for i, row in enumerate(rows):
                base = {n: row.get(n) for n in REF_NAMES}
                rec = base | preds[i] if i in preds else unreadable_row(row, reasons[i])
                rec |= {
                    "language": row.get("language"),
                    "node": self.node,
                    "model_label": entry.label,
                    "actor": self.actor,
                }
                out.append(rec)
        return pa.Table.from_pylist(
            [{n: r.get(n) for n in self.schema.names} for r in out], schema=self.schema
        )
