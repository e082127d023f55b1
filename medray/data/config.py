"""Typed settings of the preprocess job (``jobs/preprocess.py``), shared with the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medray.config import ConfigError

SourceKind = Literal["mimic-cxr", "slake", "vqa-rad", "medmcqa", "jsonl", "pubmedqa"]
SYNTH_KINDS = ("mimic-cxr", "slake", "vqa-rad", "medmcqa")


@dataclass(frozen=True)
class SplitSettings:
    """How rows get their split.

    Official splits are kept where a dataset has them (VQA-RAD test set, SLAKE files,
    MIMIC split CSV, MedMCQA files). Otherwise the split is a hash of the grouping key:
    the patient for MIMIC-CXR, the image for VQA (so an image's questions stay together),
    the question id for text QA.
    """

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    use_official: bool = True
    salt: str = "medray"

    def __post_init__(self) -> None:
        fr = (self.train, self.validation, self.test)
        if any(f < 0 for f in fr) or sum(fr) <= 0:
            raise ConfigError(f"split fractions must be >= 0 and not all 0, got {fr}")

    def fractions(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass(frozen=True)
class SourceSpec:
    """One input dataset.

    ``path`` is a local folder (absolute, ``~``, ``$MEDRAY_HOME/...`` or relative to the
    repository) or a URI (``s3://``, ``gs://``). ``kind`` picks the reader. Options apply
    to the kinds named in their comment; setting one for another kind is an error.
    """

    kind: SourceKind
    path: str
    name: str = ""  # source name in the output; default: the kind
    languages: tuple[str, ...] = ()  # slake, jsonl: keep only these q_lang values
    views: tuple[str, ...] = ()  # mimic-cxr: keep only these ViewPosition values
    boxes_file: str = ""  # mimic-cxr: MS-CXR-style box CSV (relative to path)
    reports_path: str = ""  # mimic-cxr: folder with files/pXX/.../sNNN.txt (default: path)
    files: tuple[str, ...] = ()  # medmcqa, jsonl: annotation files (relative to path)
    image_root: str = ""  # jsonl: folder images are relative to (default: path)
    cop_base: int = 1  # medmcqa: 1 for the original release, 0 for Hugging Face exports
    limit: int = 0  # keep the first N records (0: all)
    synth_n: int = 0  # generate N synthetic samples at path first if it is missing
    synth_seed: int = 0
    synth_image_size: int = 0  # edge of the generated images (0: the generator's default)

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError(f"source of kind {self.kind!r}: path is required")
        only = {
            "languages": ("slake", "jsonl"),
            "views": ("mimic-cxr",),
            "boxes_file": ("mimic-cxr",),
            "reports_path": ("mimic-cxr",),
            "files": ("medmcqa", "jsonl"),
            "image_root": ("jsonl",),
        }
        for opt, kinds in only.items():
            if getattr(self, opt) and self.kind not in kinds:
                raise ConfigError(
                    f"source {self.source_name!r}: option {opt!r} applies to {list(kinds)}, not {self.kind!r}"
                )
        if self.cop_base not in (0, 1):
            raise ConfigError(f"cop_base must be 0 or 1, got {self.cop_base}")
        if self.synth_n and self.kind not in SYNTH_KINDS:
            raise ConfigError(
                f"source {self.source_name!r}: no synthetic generator for {self.kind!r} "
                f"(have {list(SYNTH_KINDS)})"
            )
        if self.limit < 0 or self.synth_n < 0 or self.synth_image_size < 0:
            raise ConfigError("limit, synth_n and synth_image_size must be >= 0")

    @property
    def source_name(self) -> str:
        return self.name or self.kind


@dataclass(frozen=True)
class ImageSettings:
    """Decode, check and resize every image to one target size."""

    size: int = 224  # target edge in pixels
    resize: Literal["pad", "stretch", "fit"] = "pad"  # pad: keep aspect, pad to a square
    color: Literal["auto", "L", "RGB"] = "auto"  # auto: grayscale stays L, colour stays RGB
    format: Literal["jpeg", "png"] = "jpeg"
    jpeg_quality: int = 90
    max_pixels: int = 100_000_000  # larger inputs are quarantined (decompression bombs)
    max_file_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 4096:
            raise ConfigError(f"image.size must be between 8 and 4096, got {self.size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"image.jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if self.max_pixels <= 0 or self.max_file_bytes <= 0:
            raise ConfigError("image.max_pixels and image.max_file_bytes must be positive")


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocess datasets into Parquet shards in the unified schema (Ray Data)."""

    sources: tuple[SourceSpec, ...] = ()
    name: str = "preprocessed"
    output: str = ""  # folder or URI; empty: $MEDRAY_HOME/data/<name>
    overwrite: bool = True  # replace an earlier output of this job at the same place
    image: ImageSettings = field(default_factory=ImageSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    num_blocks: int = 0  # Ray Data blocks (= tasks); 0: from rows_per_block and the cluster
    rows_per_block: int = 96
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    # Ray Data's per-operator resource reservation; off: on a small cluster it kept this
    # one-stage pipeline to one task at a time (see jobs/preprocess.py build_dataset).
    reserve_operator_resources: bool = False
    fail_at_record: int = -1  # testing aid: raise while processing record N (-1: never)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("sources: name at least one input dataset")
        names = [s.source_name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"source names must be unique, repeated: {dupes} (set `name:`)")
        if self.num_blocks < 0 or self.rows_per_block < 1:
            raise ConfigError("num_blocks must be >= 0 and rows_per_block >= 1")
