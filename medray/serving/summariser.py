"""The Summariser: a causal text LM that turns the reasoner's steps into a short diagnosis.

Its prompt, target and output parsing are the summariser's contract
(:mod:`medray.contracts.summariser`), its weights come from the one loader
(:func:`medray.models.finetuned.load_finetuned`: a preset, a full checkpoint or a LoRA
adapter trained by ``jobs/train_sft.py`` task ``summariser``) and its answer from the one
generate path, so the served summary equals the SFT evaluation's for the same input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from medray.contracts import summariser as contract
from medray.models.generate import GenerationParams, generate

log = logging.getLogger(__name__)


class Summariser:
    """A causal LM answering the summariser's contract prompt.

    Args:
        model: preset name, hub id, folder or storage URI (trained adapter or checkpoint).
        max_new_tokens: length of a summary (the contract's by default).
        device: torch device.
        base: the base an adapter must have been trained on (checked by name), if any.
    """

    def __init__(
        self,
        model: str = "tiny-lm",
        max_new_tokens: int = contract.MAX_NEW_TOKENS,
        device: str = "cpu",
        base: str | None = None,
    ) -> None:
        from medray.models.finetuned import load_finetuned

        t0 = time.perf_counter()
        self.model, self.tokenizer, self.source = load_finetuned(
            model, "lm", expected_base=base, device=device
        )
        self.model_ref = model
        self.params = GenerationParams(max_new_tokens=max_new_tokens)
        log.info("summariser %s loaded in %.1fs", model, time.perf_counter() - t0)

    def describe(self) -> dict[str, Any]:
        """Which model answers: the preset, or the trained model and its run."""
        return {"model": self.model_ref, **self.source.summary()}

    def summarise_steps(self, steps: Sequence[str]) -> dict[str, Any]:
        """Summarise reasoning steps: ``{"summary", "tokens", "model"}``."""
        gen = generate(self.model, self.tokenizer, [contract.prompt(steps)], (), self.params)[0]
        return {
            "summary": contract.parse(gen.text),
            "tokens": len(gen.token_ids),
            "model": self.describe(),
        }

    def summarise(self, caption: str, reasoning: Sequence[str], answer: str) -> dict[str, Any]:
        """Summarise one analysis (its steps, else its caption and answer)."""
        steps = contract.steps_from_answer(caption, reasoning, answer)
        if not steps:
            return {"summary": "", "tokens": 0, "model": self.describe()}
        return self.summarise_steps(steps)
