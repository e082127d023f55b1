"""Builders of the registry's ``random`` presets: real-size architectures, random weights.

Each builder takes the preset's spec (the published config values of
:mod:`medray.models.real_configs`), a seed, an output folder and the device to initialise
on (a GPU initialises a 2B model in seconds), and saves the model with the family's own
``save_pretrained`` format through the same code as the tiny builds
(:mod:`medray.models.tiny`), so the project's loaders read it like a hub checkpoint.
Weights are saved in the dtype the hub checkpoint has (bf16 for Qwen, fp32 for open_clip).

The weights are noise: these folders exist for speed and memory benchmarks only. The
registry marks each build (``medray_build.json`` and a ``RANDOM_WEIGHTS_...`` file) and
the loaders log a warning when they load one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medray.models.registry import PRESETS, Preset, UnknownPresetError, get_preset

log = logging.getLogger(__name__)

RANDOM_MARKER = "RANDOM_WEIGHTS_BENCHMARK_ONLY.txt"
# The offline corpus yields about 1,200 BPE tokens; the rest of the real size is filler.
_TRAINED_VOCAB = 8192


def random_weights_preset(name: str) -> Preset:
    """The random-weight twin of hub preset ``name`` (or ``name`` itself if it is one).

    Raises:
        UnknownPresetError: no random-weight build exists for ``name``.
    """
    preset = get_preset(name)
    if preset.source == "random":
        return preset
    twins = {p.ref: p for p in PRESETS.values() if p.source == "random"}
    if name not in twins:
        raise UnknownPresetError(
            f"preset {name!r} has no random-weight real-size build; those exist for: "
            f"{', '.join(sorted(twins))}"
        )
    return twins[name]


def is_random_weights(ref: str) -> bool:
    """True when ``ref`` (a preset name or a model folder) is a random-weight build."""
    if ref in PRESETS:
        return PRESETS[ref].source == "random"
    record = Path(ref).expanduser() / "medray_build.json"
    try:
        return bool(json.loads(record.read_text()).get("random_weights"))
    except (OSError, ValueError):
        return False


def build_random(preset: Preset, out: Path, device: str | None) -> dict[str, Any]:
    """Build random preset ``preset`` into ``out``, mark it; return its build record."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    log.warning(
        "building %s: the architecture of %s with RANDOM weights, for benchmarks only",
        preset.name,
        preset.ref,
    )
    BUILDERS[preset.kind](preset.spec, preset.seed, out, device)
    (out / RANDOM_MARKER).write_text(
        f"{preset.name}: the architecture of {preset.ref} with RANDOM weights, built by "
        "medray for speed and memory benchmarks. Its outputs are noise: never serve, "
        "evaluate or fine-tune it as a model.\n"
    )
    # No checksum: hashing gigabytes of noise would cost more than building it.
    return {"random_weights": True, "benchmark_only": True, "device": device}


def padded_tokenizer(size: int, seed: int):
    """The offline byte-level BPE tokenizer padded to ``size`` ids (a fast tokenizer)."""
    from medray.models.tokenizer import pad_vocab, train_tokenizer, wrap_tokenizer

    return wrap_tokenizer(pad_vocab(train_tokenizer(_TRAINED_VOCAB, seed), size))


def _dtype(spec: Mapping[str, Any]):
    import torch

    return getattr(torch, str(spec.get("dtype", "float32")))


def build_random_vlm(spec: Mapping[str, Any], seed: int, out_dir: Path, device: str) -> None:
    """Qwen2-VL at the spec's size (``text_config``, ``vision_config``, pixels, dtype)."""
    from medray.models.tiny import save_qwen2_vl

    tokenizer = padded_tokenizer(int(spec["tokenizer_size"]), seed)
    save_qwen2_vl(
        tokenizer,
        spec["text_config"],
        spec["vision_config"],
        (int(spec["min_pixels"]), int(spec["max_pixels"])),
        seed,
        out_dir,
        dtype=_dtype(spec),
        device=device,
    )


def build_random_lm(spec: Mapping[str, Any], seed: int, out_dir: Path, device: str) -> None:
    """A Qwen2 causal LM at the spec's size (``config``, ``tokenizer_size``, dtype)."""
    from medray.models.tiny import save_qwen2_lm

    tokenizer = padded_tokenizer(int(spec["tokenizer_size"]), seed)
    save_qwen2_lm(tokenizer, spec["config"], seed, out_dir, dtype=_dtype(spec), device=device)


def build_random_clip(spec: Mapping[str, Any], seed: int, out_dir: Path, device: str) -> None:
    """An open_clip CLIP at the spec's size (open_clip's model-config format), on the CPU:
    150M parameters initialise in seconds there, and open_clip's own tokenizer is real."""
    from medray.models.tiny import build_tiny_clip

    build_tiny_clip(spec, seed, out_dir)


BUILDERS = {"vlm": build_random_vlm, "lm": build_random_lm, "clip": build_random_clip}
