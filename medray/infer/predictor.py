"""The Ray Data callable class of batch inference: input rows -> prediction rows.

:class:`VQAPredictor` loads every configured model once per actor through the one loader
(LoRA adapters share their base model in a :class:`~medray.models.finetuned.AdapterHost`),
pins torch to the actor's CPUs, and for each batch (pyarrow in, pyarrow out) decodes the
images, asks every model with the reasoner's contract prompt through the one generate
path (:func:`medray.models.generate.generate`, with scores), parses the answers with the
contract's parser, scores the answer's confidence from token log-probabilities,
optionally asks again with the region of interest inpainted, a random same-size region
inpainted (:func:`medray.contracts.counterfactual.counterfactual_images`) and a blank
image, and
returns one prediction row per (input row, model) in the ``medray-predictions/1``
columns plus ``model_label``. A row whose image cannot be read (or whose input line is
malformed) comes back with ``error`` set and null predictions: never dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from PIL import Image

from medray.contracts import reasoner as contract
from medray.contracts.counterfactual import counterfactual_images
from medray.eval.predictions import REFERENCE_COLUMNS, prediction_schema, unreadable_row
from medray.imaging import ImageDecodeError, decode_image
from medray.models.generate import Generated, GenerationParams, generate, render

log = logging.getLogger(__name__)
REF_NAMES = tuple(c[0] for c in REFERENCE_COLUMNS)
CF_COLUMNS = ("cf_roi_answer", "cf_random_answer", "cf_kind")


@dataclass(frozen=True)
class ModelEntry:
    """One model of a run: a label, a base model and an optional LoRA adapter folder."""

    label: str
    model: str
    adapter: str | None = None
    output_format: str = contract.DEFAULT_FORMAT  # the reasoner's (OUTPUT_FORMATS)


def vqa_columns(counterfactual: bool, blank: bool) -> list[str]:
    """The optional prediction columns of a reasoner run."""
    optional = ["language", "node", "caption_consistency"]
    if counterfactual:
        optional += list(CF_COLUMNS)
    if blank:
        optional.append("blank_answer")
    return optional


def output_schema(optional: Sequence[str]) -> pa.Schema:
    """The columns every predictor batch returns (fixed, so all blocks agree): the
    contract's required ones, the ``optional`` ones, and ``model_label`` / ``actor``."""
    schema = prediction_schema(optional)
    # Not part of the predictions contract: the job splits rows by model and counts the
    # actors per node, then drops both before writing.
    schema = schema.append(pa.field("model_label", pa.string(), nullable=False))
    return schema.append(pa.field("actor", pa.string(), nullable=False))


def node_name() -> str:
    """This process's Ray node as ``<node ip>/<node id prefix>`` (unique per node, also
    for several nodes on one machine); ``"local"`` outside Ray (asking the runtime
    context would start or join a Ray instance)."""
    import ray

    if not ray.is_initialized():
        return "local"
    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    ip = ray.util.get_node_ip_address()
    return f"{ip}/{node_id[:12]}"


def actor_name() -> str:
    """This process's Ray actor id (``pid-<pid>`` outside an actor)."""
    import ray

    actor = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
    return actor or f"pid-{os.getpid()}"


def pin_threads(num_cpus: float) -> int:
    """Limit torch (and OpenMP/MKL) to the actor's CPU share; returns the thread count.

    Ray does not give an actor specific cores, so "pinned" means: as many intra-op
    threads as CPUs reserved, one inter-op thread, so that N actors of one CPU do not
    each spawn a thread per core and fight over them.
    """
    import torch

    n = max(1, int(num_cpus))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already set once in this process
        torch.set_num_interop_threads(1)
    return n


class VQAPredictor:
    """Ray Data callable class: a pyarrow batch of input rows -> prediction rows.

    Args:
        models: ``[{"label", "model", "adapter"}]``; entries with the same ``model`` share
            one loaded base model, their adapters attached to it.
        max_new_tokens: generation limit per answer.
        num_cpus: the actor's CPU reservation (torch threads).
        device: ``cpu`` or ``cuda``.
        counterfactual: also answer with the ROI and a random region inpainted.
        roi_source: one of :data:`medray.contracts.counterfactual.SOURCES`.
        blank_control: also answer with a blank image.
        seed: seed of the random regions.
        prompt: ``serving`` (the reasoner contract's prompt, the one every path uses).
        caption_embedder: sentence embedder of ``caption_consistency`` (the GRPO
            consistency reward's, :func:`medray.train.rewards.consistency_rewards`);
            empty: the column stays null.
    """

    def __init__(
        self,
        models: Sequence[Mapping[str, Any]],
        max_new_tokens: int = contract.MAX_NEW_TOKENS,
        num_cpus: float = 1.0,
        device: str = "cpu",
        counterfactual: bool = False,
        roi_source: str = "both",
        blank_control: bool = False,
        seed: int = 0,
        prompt: str = "serving",
        caption_embedder: str = "",
    ) -> None:
        from medray.models.encoders import TextEncoder
        from medray.models.finetuned import AdapterHost

        self.threads = pin_threads(num_cpus)
        self.max_new_tokens = max_new_tokens or contract.MAX_NEW_TOKENS  # 0: the contract's
        self.counterfactual = counterfactual
        self.roi_source = roi_source
        self.blank_control = blank_control
        self.seed = seed
        self.prompt = prompt
        self.entries = [
            ModelEntry(
                m["label"],
                m["model"],
                m.get("adapter") or None,
                m.get("output_format") or contract.DEFAULT_FORMAT,
            )
            for m in models
        ]
        for e in self.entries:
            contract.check_format(e.output_format)
        self.params = GenerationParams(self.max_new_tokens)
        self.hosts: dict[str, AdapterHost] = {}
        for base in dict.fromkeys(e.model for e in self.entries):
            adapters = {e.label: e.adapter for e in self.entries if e.model == base and e.adapter}
            self.hosts[base] = AdapterHost(base, adapters, kind="vlm", device=device)
        for e in self.entries:  # attach adapters now: a bad adapter fails the actor at start
            if e.adapter:
                self.hosts[e.model].load(e.label)
        self.encoder = TextEncoder(caption_embedder) if caption_embedder else None
        self.schema = output_schema(vqa_columns(counterfactual, blank_control))
        try:
            self.node, self.actor = node_name(), actor_name()
        except Exception:  # outside Ray (unit tests): no node
            self.node, self.actor = "local", f"pid-{os.getpid()}"

    # ------------------------------------------------------------------ helpers

    def _load(self, row: Mapping[str, Any]) -> tuple[Image.Image | None, str]:
        """The row's image (None for text-only rows) or the reason it cannot be read."""
        if row.get("input_error"):
            return None, row["input_error"]
        data = row.get("image")
        path = row.get("image_path")
        if data is None and path:
            from medray.data import io

            try:
                data = io.read_bytes(path)
            except FileNotFoundError:
                return None, f"image: file not found: {path}"
            except Exception as e:  # any storage error is the row's error, not the batch's
                return None, f"image: cannot read {path}: {e}"
        if data is None:
            if row.get("task") == "vqa":
                return None, "image: the row has no image"
            return None, ""
        try:
            return decode_image(bytes(data)), ""
        except ImageDecodeError as e:
            return None, f"image: {e}"

    def _ask(self, entry: ModelEntry, questions, images) -> tuple[list[Generated], float]:
        host = self.hosts[entry.model]
        adapter = entry.label if entry.adapter else None
        processing = host.processing_for(adapter)
        texts = [
            render(processing, contract.messages(q, im is not None, entry.output_format))
            for q, im in zip(questions, images, strict=True)
        ]
        t0 = time.perf_counter()
        with host.lock, host.active(adapter) as model:
            out = generate(
                model,
                processing,
                texts,
                [im for im in images if im is not None],
                self.params,
                scores=True,
            )
        return out, time.perf_counter() - t0

    # ------------------------------------------------------------------ the batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for r in rows:
            if isinstance(r.get("boxes"), str):  # JSONL input carries boxes as JSON text
                r["boxes"] = _boxes_from_json(r)
        t0 = time.perf_counter()
        loaded = [self._load(r) for r in rows]
        load_s = time.perf_counter() - t0
        ok = [i for i, (im, err) in enumerate(loaded) if not err]
        out: list[dict[str, Any]] = []
        for entry in self.entries:
            preds: dict[int, dict[str, Any]] = {}
            if ok:
                images = [loaded[i][0] for i in ok]
                gens, secs = self._ask(entry, [rows[i]["question"] for i in ok], images)
                per_row_ms = 1000.0 * (secs + load_s) / len(ok)
                host = self.hosts[entry.model]
                tok = host.processing_for(entry.label if entry.adapter else None).tokenizer
                for i, im, gen in zip(ok, images, gens, strict=True):
                    preds[i] = _prediction(gen, tok, im, per_row_ms, entry.output_format)
                if self.counterfactual or self.blank_control:
                    self._controls(entry, rows, ok, images, preds)
                if self.encoder is not None:
                    self._consistency(rows, ok, preds)
            for i, row in enumerate(rows):
                if i in preds:
                    rec = {n: row.get(n) for n in REF_NAMES} | preds[i]
                else:
                    rec = unreadable_row(row, loaded[i][1])
                rec["language"] = row.get("language")
                rec["node"] = self.node
                rec["model_label"] = entry.label
                rec["actor"] = self.actor
                out.append(rec)
        return pa.Table.from_pylist(
            [{n: r.get(n) for n in self.schema.names} for r in out], schema=self.schema
        )

    def _consistency(self, rows, ok, preds) -> None:
        """Each answer's caption-question consistency, the GRPO reward's function (0 for an
        answer without a caption)."""
        from medray.train.rewards import consistency_rewards

        scores = consistency_rewards(
            [preds[i]["raw_text"] or "" for i in ok],
            [rows[i]["question"] for i in ok],
            self.encoder.encode,
        )
        for i, score in zip(ok, scores, strict=True):
            preds[i]["caption_consistency"] = float(score)

    def _controls(self, entry, rows, ok, images, preds) -> None:
        """Counterfactual and blank-image answers, asked in one batch per model."""
        questions, variants, where = [], [], []
        for i, im in zip(ok, images, strict=True):
            if im is None:
                continue
            if self.counterfactual:
                cf = counterfactual_images(
                    im,
                    rows[i],
                    preds[i]["pred_boxes"] or [],
                    source=self.roi_source,
                    seed=self.seed,
                )
                if cf is not None:
                    preds[i]["cf_kind"] = cf.kind
                    for col, variant in (
                        ("cf_roi_answer", cf.roi_image),
                        ("cf_random_answer", cf.random_image),
                    ):
                        questions.append(rows[i]["question"])
                        variants.append(variant)
                        where.append((i, col))
            if self.blank_control:
                questions.append(rows[i]["question"])
                variants.append(contract.blank_like(im))
                where.append((i, "blank_answer"))
        if not questions:
            return
        gens, _ = self._ask(entry, questions, variants)
        for (i, col), gen, im in zip(where, gens, variants, strict=True):
            value = contract.parse(gen.text, im.size, entry.output_format).value
            preds[i][col] = value.answer if value is not None and value.answer else None


def _prediction(
    gen: Generated,
    tokenizer,
    image: Image.Image | None,
    latency_ms: float,
    fmt: str = contract.DEFAULT_FORMAT,
) -> dict:
    """The prediction columns of one generated answer (parsed in output format ``fmt``)."""
    res = contract.parse(gen.text, image.size if image is not None else None, fmt)
    v = res.value
    answer = v.answer if v is not None and v.answer else None
    return {
        "raw_text": gen.text,
        "parse_ok": bool(res.ok),
        "parsed": json.dumps(v.to_dict()) if res.ok and v is not None else None,
        "parse_errors": list(res.errors),
        "repaired": list(res.repaired),
        "pred_answer": answer,
        "pred_caption": (v.caption or None) if v is not None else None,
        "pred_reasoning": list(v.reasoning) if v is not None else [],
        "pred_boxes": [list(b) for b in v.boxes] if v is not None else [],
        "confidence": contract.answer_confidence(gen, tokenizer) if answer is not None else None,
        "latency_ms": latency_ms,
        "error": "",
    }


def _boxes_from_json(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Reference boxes of a JSONL row; a malformed list marks the row's input error."""
    try:
        boxes = json.loads(row["boxes"])
        return [
            {
                "label": str(b.get("label") or ""),
                **{k: float(b[k]) for k in ("x1", "y1", "x2", "y2")},
            }
            for b in boxes
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        if not row.get("input_error"):
            row["input_error"] = f"input: boxes must be a list of {{label, x1, y1, x2, y2}}: {e}"
        return None
