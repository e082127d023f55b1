"""Model registry (presets: real hub ids and tiny offline builds) and loaders."""

from medray.models.fullsize import is_random_weights, random_weights_preset
from medray.models.loading import load_clip, load_embedder, load_lm, load_vlm
from medray.models.registry import (
    PRESETS,
    TINY_DEFAULTS,
    ModelNotAvailableError,
    Preset,
    UnknownPresetError,
    ensure_built,
    get_preset,
    resolve,
    weights_checksum,
)

__all__ = [
    "PRESETS",
    "TINY_DEFAULTS",
    "ModelNotAvailableError",
    "Preset",
    "UnknownPresetError",
    "ensure_built",
    "get_preset",
    "is_random_weights",
    "load_clip",
    "load_embedder",
    "load_lm",
    "load_vlm",
    "random_weights_preset",
    "resolve",
    "weights_checksum",
]
