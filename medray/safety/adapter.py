"""The domain head's view encoder: all-MiniLM-L6-v2 with a LoRA adapter trained for the head.

The frozen sentence embedder puts short general questions ("Why do cats purr?") next to
short imaging questions; a low-rank adapter (peft LoRA on the encoder's linear layers),
trained with the head on the guard set's tuning split (:mod:`medray.safety.train_head`),
moves them apart. The adapter is applied to a copy of the loaded embedder's transformer,
so the plain embedder (exemplar similarities, retrieval) stays as it was. Pooling is the
embedder's own: the attention-masked token mean, L2-normalised.

The adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, peft's
format) sits beside the head file, which names it. The shipped head has none; the
candidate (trained on the tuning split of 2026-12-07 evening, role wraps on both sides) is in
``benchmarks/results/guard-adapter-2026-12-07b``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np

LORA_TARGETS = ("query", "key", "value", "dense")
MAX_TOKENS = 128


class ViewEncoder:
    """Embeds texts with the adapted transformer of a ``SentenceTransformer``.

    Args:
        sentence_model: the loaded embedder (``medray.models.load_embedder``); its
            transformer is copied, never changed.
        adapter: a saved adapter folder, or None for a new, trainable one.
        rank: LoRA rank of a new adapter.
        seed: seeds the new adapter's initialisation.
    """

    def __init__(
        self, sentence_model, adapter: str | Path | None = None, rank: int = 8, seed: int = 0
    ) -> None:
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model

        self.tokenizer = sentence_model.tokenizer
        base = copy.deepcopy(sentence_model[0].auto_model)
        if adapter is not None:
            self.model = PeftModel.from_pretrained(base, str(adapter))
        else:
            torch.manual_seed(seed)
            config = LoraConfig(
                r=rank, lora_alpha=2 * rank, target_modules=list(LORA_TARGETS), lora_dropout=0.1
            )
            self.model = get_peft_model(base, config)
        self.model.eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, texts: Sequence[str]):
        """``(n, dim)`` L2-normalised mean-pooled embeddings as a torch tensor (with grad
        when the model is in training mode)."""
        import torch

        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``(n, dim)`` float32 embeddings, no grad, in batches."""
        import torch

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            parts = [
                self.forward(texts[i : i + batch_size]).float().numpy()
                for i in range(0, len(texts), batch_size)
            ]
        return np.concatenate(parts).astype(np.float32)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(texts)

    def trainable_parameters(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.model.save_pretrained(str(path))
        (path / "README.md").unlink(missing_ok=True)  # peft's empty model card
        return path
