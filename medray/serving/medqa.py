"""MedQA: the text medical-QA model behind ``POST /generate``.

The prior art's ``/generate`` is a question-answering model; this is it: a causal text LM
(the ``tiny-lm`` preset, or a model trained by ``jobs/train_sft.py`` task ``medqa``, see
``jobs/configs/sft_medqa_tiny.yaml``) answering the medical-QA contract's prompt
(:mod:`medray.contracts.medqa`) through the one loader and the one generate path, so the
served answer equals the SFT evaluation's for the same question.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from medray.contracts import medqa as contract
from medray.models.generate import GenerationParams, generate

log = logging.getLogger(__name__)


class MedQA:
    """A causal LM answering medical questions (free or multiple choice).

    Args:
        model: preset name, hub id, folder or storage URI (trained adapter or checkpoint).
        name: the model name clients use (``/v1/models``, ``/generate``'s ``model``).
        device: torch device.
    """

    def __init__(self, model: str = "tiny-lm", name: str = "medqa", device: str = "cpu") -> None:
        from medray.models.finetuned import load_finetuned

        t0 = time.perf_counter()
        self.model, self.tokenizer, self.source = load_finetuned(model, "lm", device=device)
        self.model_ref = model
        self.name = name
        log.info("medqa %s loaded in %.1fs", model, time.perf_counter() - t0)

    def describe(self) -> dict[str, Any]:
        """Which model answers: its name, the preset or trained model and its run."""
        return {"model": self.name, "weights": self.model_ref, **self.source.summary()}

    def answer(
        self,
        question: str,
        choices: Sequence[str] | None = None,
        params: GenerationParams = contract.GENERATION,
    ) -> dict[str, Any]:
        """``{"text", "answer", "letter", "explanation", "tokens", "finish_reason", "model"}``."""
        prompt = contract.prompt(question, choices)
        gen = generate(self.model, self.tokenizer, [prompt], (), params)[0]
        parsed = contract.parse(gen.text, has_choices=bool(choices))
        return {
            "text": gen.text.strip(),
            "answer": parsed.answer,
            "letter": parsed.letter,
            "explanation": parsed.explanation,
            "tokens": len(gen.token_ids),
            "finish_reason": gen.finish_reason,
            "model": self.describe(),
        }
