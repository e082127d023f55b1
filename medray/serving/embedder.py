"""The Embedder: CLIP image and text vectors (case search) and sentence vectors
(knowledge search). Every method takes a batch, so a serving layer can batch requests."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


class Embedder:
    """CLIP (open_clip) + a sentence embedder.

    Args:
        clip: CLIP preset / hub id / folder (``load_clip``).
        text: sentence-embedder preset (``load_embedder``).
        device: torch device.
    """

    def __init__(
        self, clip: str = "tiny-clip", text: str = "minilm-l6", device: str = "cpu"
    ) -> None:
        from medray.models import load_clip, load_embedder

        t0 = time.perf_counter()
        self.clip, _, self.preprocess, self.clip_tokenizer = load_clip(clip)
        self.clip.to(device).eval()
        self.text_model = load_embedder(text, device=device)
        self.device = device
        log.info("embedder %s + %s loaded in %.1fs", clip, text, time.perf_counter() - t0)

    @property
    def clip_dim(self) -> int:
        """Dimension of CLIP vectors."""
        return (
            int(self.clip.text_projection.shape[1])
            if hasattr(self.clip, "text_projection")
            else len(self.clip_texts(["x"])[0])
        )

    def clip_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised CLIP image vectors, one row per image."""
        import torch

        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        batch = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        with torch.inference_mode():
            v = self.clip.encode_image(batch, normalize=True)
        return v.float().cpu().numpy()

    def clip_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised CLIP text vectors (same space as the images)."""
        import torch

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        tokens = self.clip_tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            v = self.clip.encode_text(tokens, normalize=True)
        return v.float().cpu().numpy()

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised sentence vectors (knowledge-base dense search).

        Padded to the longest text of each batch (sentence-transformers sorts by length),
        so a batch of short texts does not pay for the model's maximum length."""
        import torch

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        with torch.inference_mode():
            v = self.text_model.encode(
                list(texts), normalize_embeddings=True, batch_size=64, show_progress_bar=False
            )
        return np.asarray(v, dtype=np.float32)
