"""Builders for the tiny offline presets.

Each builder takes a spec (dimensions), a seed and an output folder, creates a randomly
initialised model of the same family as a real checkpoint, and saves it with the
family's own ``save_pretrained`` format, so that the loaders in ``medray.models.loading``
read it through the same code path as a hub id. Builders are pure apart from writing
``out_dir``; the same spec and seed give the same weights.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medray.models.tokenizer import (
    IM_END,
    IMAGE_PAD,
    PAD,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    train_tokenizer,
    wrap_tokenizer,
)


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def _tokenizer(spec: Mapping[str, Any], seed: int):
    tok = train_tokenizer(vocab_size=int(spec.get("vocab_size", 4096)), seed=seed)
    return wrap_tokenizer(tok)


def special_ids(tokenizer) -> dict[str, int]:
    """Ids of the ChatML and vision marker tokens in ``tokenizer``."""
    return {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in (PAD, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)
    }


def _instantiate(cls, config, dtype: torch.dtype | None, device: str | None):
    """``cls(config)`` with random weights; created in ``dtype`` on ``device`` when given
    (the real-size benchmark builds), else exactly as the tiny builds always were."""
    if dtype is None and device is None:
        return cls(config)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or previous)
    try:
        with torch.device(device or "cpu"):
            return cls(config)
    finally:
        torch.set_default_dtype(previous)


def make_qwen2_vl(
    tokenizer,
    text_config: Mapping[str, Any],
    vision_config: Mapping[str, Any],
    pixels: tuple[int, int],
    seed: int,
    *,
    dtype: torch.dtype | None = None,
    device: str | None = None,
):
    """A randomly initialised Qwen2-VL and its processor: ``(model, processor)``.

    Args:
        tokenizer: fast tokenizer with the ChatML and vision special tokens.
        text_config: the language model's config (token ids are set from ``tokenizer``).
        vision_config: the vision tower's config.
        pixels: the image processor's ``(min_pixels, max_pixels)``.
        seed: torch seed of the initialisation.
        dtype: parameter dtype (None: float32).
        device: where the weights are initialised (None: cpu; ``meta``: shapes only).
    """
    from transformers import (
        GenerationConfig,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    ids = special_ids(tokenizer)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=pixels[0], max_pixels=pixels[1]),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=tokenizer.chat_template,
    )
    config = Qwen2VLConfig(
        # Copies: transformers rewrites nested dicts (rope settings) in place, and a preset's
        # spec must not change (its cache key is a hash of it).
        text_config={
            **copy.deepcopy(dict(text_config)),
            "bos_token_id": ids[PAD],
            "eos_token_id": ids[IM_END],
            "pad_token_id": ids[PAD],
        },
        vision_config=copy.deepcopy(dict(vision_config)),
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=True,
    )
    _seeded(seed)
    model = _instantiate(Qwen2VLForConditionalGeneration, config, dtype, device)
    model.generation_config = GenerationConfig(
        eos_token_id=ids[IM_END], pad_token_id=ids[PAD], bos_token_id=ids[PAD], do_sample=False
    )
    return model, processor


def save_qwen2_vl(tokenizer, text_config, vision_config, pixels, seed, out_dir: Path, **kw):
    """:func:`make_qwen2_vl`, saved into ``out_dir`` with ``save_pretrained``."""
    model, processor = make_qwen2_vl(tokenizer, text_config, vision_config, pixels, seed, **kw)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def build_tiny_vlm(spec: Mapping[str, Any], seed: int, out_dir: Path) -> None:
    """A Qwen2-VL-family vision-language model with a tokenizer trained offline."""
    tokenizer = _tokenizer(spec, seed)
    pixels = int(spec["image_size"]) ** 2
    head_dim = spec["hidden_size"] // spec["num_attention_heads"]
    half = head_dim // 2
    # Qwen2-VL splits each rotary half into (temporal, height, width) sections.
    mrope = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec["hidden_size"],
        "intermediate_size": spec["intermediate_size"],
        "num_hidden_layers": spec["num_hidden_layers"],
        "num_attention_heads": spec["num_attention_heads"],
        "num_key_value_heads": spec["num_key_value_heads"],
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": mrope,
        },
    }
    vision_config = {
        "depth": spec["vision_depth"],
        "embed_dim": spec["vision_embed_dim"],
        "hidden_size": spec["hidden_size"],
        "num_heads": spec["vision_num_heads"],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    save_qwen2_vl(tokenizer, text_config, vision_config, (pixels, pixels), seed, out_dir)


def make_qwen2_lm(
    tokenizer,
    config_values: Mapping[str, Any],
    seed: int,
    *,
    dtype: torch.dtype | None = None,
    device: str | None = None,
):
    """A randomly initialised Qwen2 causal LM for ``tokenizer`` (arguments as in
    :func:`make_qwen2_vl`)."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    pad, eos = tokenizer.convert_tokens_to_ids(PAD), tokenizer.convert_tokens_to_ids(IM_END)
    config = Qwen2Config(
        **{"tie_word_embeddings": True, **copy.deepcopy(dict(config_values))},
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    _seeded(seed)
    model = _instantiate(Qwen2ForCausalLM, config, dtype, device)
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=pad, bos_token_id=pad, do_sample=False
    )
    return model


def save_qwen2_lm(tokenizer, config_values, seed, out_dir: Path, **kw) -> None:
    """:func:`make_qwen2_lm`, saved into ``out_dir`` with its tokenizer."""
    make_qwen2_lm(tokenizer, config_values, seed, **kw).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def build_tiny_lm(spec: Mapping[str, Any], seed: int, out_dir: Path) -> None:
    """A Qwen2-family causal text LM (summariser, text medical QA) with its tokenizer."""
    tokenizer = _tokenizer(spec, seed)
    config_values = {
        "vocab_size": len(tokenizer),
        "hidden_size": spec["hidden_size"],
        "intermediate_size": spec["intermediate_size"],
        "num_hidden_layers": spec["num_hidden_layers"],
        "num_attention_heads": spec["num_attention_heads"],
        "num_key_value_heads": spec["num_key_value_heads"],
        "max_position_embeddings": 4096,
    }
    save_qwen2_lm(tokenizer, config_values, seed, out_dir)


def build_tiny_clip(spec: Mapping[str, Any], seed: int, out_dir: Path) -> None:
    """An open_clip ViT + text transformer in open_clip's hub layout.

    It uses open_clip's own CLIP BPE tokenizer (shipped inside the package), exactly as
    ViT-B-32 does; the folder loads with ``open_clip.create_model_and_transforms
    ("local-dir:<folder>")`` like ``hf-hub:`` ids do.
    """
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    model_cfg = json.loads(json.dumps(dict(spec)))  # plain, JSON-serialisable copy
    _seeded(seed)
    model = open_clip.CLIP(**model_cfg)
    # open_clip's factory sets these on load; the saved preprocess config records them.
    model.visual.image_mean = open_clip.OPENAI_DATASET_MEAN
    model.visual.image_std = open_clip.OPENAI_DATASET_STD
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        out_dir / "open_clip_model.safetensors",
    )
    save_config_for_hf(model, out_dir / "open_clip_config.json", model_config=model_cfg)


BUILDERS = {"vlm": build_tiny_vlm, "lm": build_tiny_lm, "clip": build_tiny_clip}
