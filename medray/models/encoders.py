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


def report_text(findings: str | None, impression: str | None, which: str = "report") -> str:
    """The text an image-report pair is embedded by: ``report`` (both sections),
    ``findings`` or ``impression`` (each falling back to the other when empty)."""
    # Parquet nulls arrive as None, NaN or pandas.NA (which refuses ``or``): all are "empty".
    findings = findings.strip() if isinstance(findings, str) else ""
    impression = impression.strip() if isinstance(impression, str) else ""
    if which == "findings":
        return findings or impression
    if which == "impression":
        return impression or findings
    parts = [
        f"FINDINGS: {findings}" if findings else "",
        f"IMPRESSION: {impression}" if impression else "",
    ]
    return " ".join(p for p in parts if p)


class ClipBatchEncoder:
    """Ray Data callable class (pandas batches): image bytes + report -> CLIP vectors.

    Adds ``report`` (the embedded text), ``image_vec``, ``text_vec`` and ``error``; drops
    the image bytes. Rows whose image cannot be decoded keep zero vectors and a specific
    ``error``, so callers report them instead of losing them.
    """

    def __init__(self, clip_model: str, text: str = "report", device: str = "cpu") -> None:
        self.encoder = ClipEncoder(clip_model, device=device)
        self.text = text

    def __call__(self, batch):
        from medray.imaging import ImageDecodeError

        texts = [
            report_text(f, i, self.text)
            for f, i in zip(batch["findings"], batch["impression"], strict=True)
        ]
        images, errors = [], []
        for data in batch["image"]:
            if data is None:
                images.append(None)
                errors.append("no image")
                continue
            try:
                images.append(decode_image(bytes(data)))
                errors.append("")
            except ImageDecodeError as e:
                images.append(None)
                errors.append(str(e))
        ok = [i for i, im in enumerate(images) if im is not None]
        image_vecs = np.zeros((len(images), self.encoder.dim), dtype=np.float32)
        text_vecs = np.zeros_like(image_vecs)
        if ok:
            image_vecs[ok] = self.encoder.encode_images([images[i] for i in ok])
            text_vecs[ok] = self.encoder.encode_texts([texts[i] for i in ok])
        out = batch.drop(columns=["image"])
        out["report"] = texts
        out["image_vec"] = list(image_vecs)
        out["text_vec"] = list(text_vecs)
        out["error"] = errors
        return out
