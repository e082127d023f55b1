"""Loaders: one per model family, each taking a preset name, a hub id or a folder.

They call the family's own ``from_pretrained`` (transformers), ``create_model_and_transforms``
(open_clip) or ``SentenceTransformer`` (sentence-transformers), so a tiny preset built
offline and a real hub checkpoint go through the same code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medray.models.fullsize import RANDOM_MARKER, is_random_weights
from medray.models.registry import Kind, ModelNotAvailableError, resolve

log = logging.getLogger(__name__)


def _offline_error(ref: str, location: str, err: Exception) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"could not load model {ref!r} from {location!r}: {type(err).__name__}: {err}. "
        "If this is a hub id, it must be in the local Hugging Face cache (no network here) "
        "or reachable; for offline runs use a tiny preset (see `medray models list`)."
    )


def _load(ref: str, kind: Kind, fn):
    location = resolve(ref, kind)
    if is_random_weights(location):
        log.warning(
            "model %r at %s has RANDOM weights (%s): it is for speed and memory "
            "benchmarks only and its outputs are noise",
            ref,
            location,
            RANDOM_MARKER,
        )
    try:
        return fn(location)
    except (OSError, ValueError) as e:
        if Path(location).exists():
            raise
        raise _offline_error(ref, location, e) from e


def load_vlm(ref: str, **model_kwargs: Any):
    """Load a vision-language model and its processor: ``(model, processor)``."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    def fn(loc: str):
        processor = AutoProcessor.from_pretrained(loc)
        model = AutoModelForImageTextToText.from_pretrained(loc, **model_kwargs)
        return model, processor

    return _load(ref, "vlm", fn)


def load_lm(ref: str, **model_kwargs: Any):
    """Load a causal text LM and its tokenizer: ``(model, tokenizer)``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def fn(loc: str):
        tokenizer = AutoTokenizer.from_pretrained(loc)
        model = AutoModelForCausalLM.from_pretrained(loc, **model_kwargs)
        return model, tokenizer

    return _load(ref, "lm", fn)


def clip_id(location: str) -> str:
    """open_clip model id for a location: folders get the ``local-dir:`` schema."""
    if location.startswith(("hf-hub:", "local-dir:")):
        return location
    if Path(location).is_dir():
        return f"local-dir:{location}"
    return f"hf-hub:{location}" if "/" in location else location


def load_clip(ref: str, **kwargs: Any):
    """Load an open_clip model: ``(model, preprocess_train, preprocess_val, tokenizer)``."""
    import open_clip

    def fn(loc: str):
        model_id = clip_id(loc)
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            model_id, **kwargs
        )
        tokenizer = open_clip.get_tokenizer(model_id)
        return model, preprocess_train, preprocess_val, tokenizer

    return _load(ref, "clip", fn)


def load_embedder(ref: str, device: str = "cpu"):
    """Load a sentence embedder (``sentence_transformers.SentenceTransformer``)."""
    from sentence_transformers import SentenceTransformer

    return _load(ref, "embedder", lambda loc: SentenceTransformer(loc, device=device))
