"""The Summariser: a causal text LM that turns reasoning into a short diagnosis."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

SUMMARY_PROMPT = (
    "Summarise the findings below as a short diagnostic label (a few words).\n"
    "Caption: {caption}\nReasoning:\n{steps}\nAnswer: {answer}"
)


class Summariser:
    """Wraps a causal LM (``load_lm``) with the summarisation prompt.

    Args:
        model: preset name, hub id or folder.
        max_new_tokens: length of a summary.
        device: torch device.
    """

    def __init__(
        self, model: str = "tiny-lm", max_new_tokens: int = 24, device: str = "cpu"
    ) -> None:
        from medray.models import load_lm

        t0 = time.perf_counter()
        self.model, self.tokenizer = load_lm(model)
        self.model.to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens
        log.info("summariser %s loaded in %.1fs", model, time.perf_counter() - t0)

    @staticmethod
    def prompt(caption: str, reasoning: Sequence[str], answer: str) -> str:
        """The user message for one summary."""
        steps = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(reasoning)) or "(none)"
        return SUMMARY_PROMPT.format(
            caption=caption or "(none)", steps=steps, answer=answer or "(none)"
        )

    def summarise(self, caption: str, reasoning: Sequence[str], answer: str) -> dict[str, object]:
        """Summarise one analysis: ``{"summary": str, "tokens": int}``."""
        import torch

        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": self.prompt(caption, reasoning, answer)}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        ).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[0, ids["input_ids"].shape[1] :]
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return {"summary": text, "tokens": int(new.shape[0])}
