"""Embedding helpers: CLIP images/texts and sentence texts -> L2-normalised numpy vectors.

Thin, stateful wrappers around the registry loaders, used by the index job's Ray Data
actors, by searches and by the CLIP evaluation. CPU by default; pass ``device="cuda"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medray.imaging import decode_image


class ClipEncoder:
    """Encode images (encoded bytes or PIL images) and texts with an open_clip model."""

    def __init__(self, model: str, device: str = "cpu") -> None:
        from medray.models.loading import load_clip

        self.model_ref = model
        self.model, _, self.preprocess, self.tokenizer = load_clip(model)
        self.model = self.model.to(device).eval()
        self.device = device

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    def encode_images(self, images: Sequence) -> np.ndarray:
        """Images as bytes or PIL images -> (n, dim) float32, unit norm."""
        import torch

        pil = [
            decode_image(im)
            if isinstance(im, bytes | bytearray | memoryview)
            else im.convert("RGB")
            for im in images
        ]
        batch = torch.stack([self.preprocess(im) for im in pil]).to(self.device)
        with torch.no_grad():
            out = self.model.encode_image(batch, normalize=True)
        return out.float().cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (n, dim) float32, unit norm."""
        import torch

        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.no_grad():
            out = self.model.encode_text(tokens, normalize=True)
        return out.float().cpu().numpy()


class TextEncoder:
    """Encode texts with a sentence-transformers model (the knowledge base's dense leg)."""

    def __init__(self, model: str = "minilm-l6", device: str = "cpu") -> None:
        from medray.models.loading import load_embedder

        self.model_ref = model
        self.model = load_embedder(model, device=device)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )
