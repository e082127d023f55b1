"""Real-size architectures of the registry's hub presets, spelled out for offline builds.

No hub access here, so the values are written out from each model's published
``config.json`` (Qwen2-VL-2B-Instruct, Qwen2.5-0.5B-Instruct) and open_clip's own
``ViT-B-32.json``. The registry's ``*-random`` presets build these architectures with
RANDOM weights, for speed and memory benchmarks only: the weights are noise, the shapes
(and so the FLOPs, bytes and memory) are the real models'. A unit test instantiates each
on the meta device and checks the parameter count against the published one.

Tokenizers: a benchmark only needs token ids, so the builds use the offline byte-level BPE
(:mod:`medray.models.tokenizer`) padded with filler tokens to the real tokenizer's length
(151,665 ids for the Qwen2 family); its ids of the special tokens differ from Qwen's.
"""

from __future__ import annotations

from typing import Any

# Qwen/Qwen2-VL-2B-Instruct config.json (text keys under text_config, as transformers 5
# nests them; vision "in_chans" under transformers' name "in_channels") and
# preprocessor_config.json (min/max pixels); 2,208,985,600 parameters.
QWEN2_VL_2B: dict[str, Any] = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_channels": 3,
        "hidden_size": 1536,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "tokenizer_size": 151665,
    "dtype": "bfloat16",
}

# Qwen/Qwen2.5-0.5B-Instruct config.json (sliding-window keys left out: use_sliding_window
# is false); 494,032,768 parameters.
QWEN25_05B: dict[str, Any] = {
    "config": {
        "vocab_size": 151936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
    },
    "tokenizer_size": 151665,
    "dtype": "bfloat16",
}

# open_clip's model_configs/ViT-B-32.json (the architecture of
# laion/CLIP-ViT-B-32-laion2B-s34B-b79K); 151,277,313 parameters, float32 like the hub file.
CLIP_VIT_B_32: dict[str, Any] = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
}

# Parameter counts of the published models (what the unit test checks the builds against).
PUBLISHED_PARAMS: dict[str, int] = {
    "Qwen/Qwen2-VL-2B-Instruct": 2208985600,
    "Qwen/Qwen2.5-0.5B-Instruct": 494032768,
    "ViT-B-32": 151277313,
}
