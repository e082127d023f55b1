"""THE loader of a trained model: a LoRA adapter or a full checkpoint, from a local folder
or a storage URI, on top of a preset / hub base.

Batch inference, GRPO (its ``init`` policy and in-job evaluation), the SFT evaluation and
the Serve deployments load trained weights only through this module:

* :func:`describe` says what a reference is (:class:`ModelSource`): a preset or hub id, a
  full checkpoint folder, or an adapter folder and the base it was trained on (the SFT /
  GRPO job's ``medray_final.json``, else peft's ``adapter_config.json``);
* :func:`load_finetuned` loads one model and its processor/tokenizer (an adapter merged,
  or kept trainable for GRPO);
* :class:`AdapterHost` keeps one base model with several named adapters attached on
  demand (serving and batch inference), each with the processor saved beside it.

An adapter trained on another base model is refused by name
(:class:`AdapterBaseMismatchError`). A storage URI (``s3://``, ``gs://``, ``file://``) is
copied once into ``$MEDRAY_HOME/cache/finetuned/`` and loaded from there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

FINAL_MARKER = "medray_final.json"  # written by the training jobs beside the final model
Kind = Literal["vlm", "lm"]


class AdapterBaseMismatchError(ValueError):
    """An adapter was trained on a different base model than the one it is loaded onto."""


@dataclass(frozen=True)
class ModelSource:
    """What a model reference points at.

    ``kind`` is ``preset`` (a registry preset or hub id), ``checkpoint`` (a full model
    folder) or ``adapter``; ``base`` is where the base weights load from (the checkpoint
    or preset location itself unless an adapter); ``base_name`` the base as the training
    job named it; ``run`` the training job's final metrics (empty for a preset).
    """

    ref: str
    kind: Literal["preset", "checkpoint", "adapter"]
    path: str
    base: str
    base_name: str
    run: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def adapter(self) -> str | None:
        """The adapter folder, or None."""
        return self.path if self.kind == "adapter" else None

    @property
    def output_format(self) -> str | None:
        """The reasoner output format the training job recorded (None: not recorded, the
        full format; see ``medray.contracts.reasoner.OUTPUT_FORMATS``)."""
        return self.run.get("output_format")

    def summary(self) -> dict[str, Any]:
        """What a response says about the model that answered (no metrics, no paths of
        the training data)."""
        out: dict[str, Any] = {"kind": self.kind, "base": self.base_name}
        if self.kind != "preset":
            out["path"] = self.ref
            out["steps"] = self.run.get("steps")
        return out


def localize(ref: str) -> str:
    """A local folder for ``ref``: a storage URI is copied once into the cache."""
    from medray.data.io import is_uri

    if not is_uri(ref) or ref.startswith("file://"):
        return ref[len("file://") :] if ref.startswith("file://") else ref
    import pyarrow.fs as pafs

    from medray.paths import medray_home

    dest = medray_home() / "cache" / "finetuned" / hashlib.sha256(ref.encode()).hexdigest()[:16]
    done = dest / ".complete"
    if not done.is_file():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(ref, str(tmp))
        if dest.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(dest)
        done.touch()
    return str(dest)


def _same_base(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _check_base(ref: str, base: str, base_name: str, expected: str, kind: Kind, known: bool) -> str:
    """The base to load adapter ``ref`` onto; refuses a different known base by name.

    The adapter's base is known when the training job recorded it (``known``) or its
    folder exists here; a base recorded only as a path that does not exist here (a run
    copied from another machine) is taken to be ``expected``, with a warning.
    """
    from medray.models.registry import resolve

    wanted = expected
    with contextlib.suppress(Exception):
        wanted = resolve(expected, kind)
    candidates = {base, base_name}
    with contextlib.suppress(Exception):
        candidates.add(resolve(base_name, kind))
    if any(c and (c == expected or _same_base(c, wanted)) for c in candidates):
        return base if base and Path(base).exists() else wanted
    if base and (known or Path(base).exists()):
        raise AdapterBaseMismatchError(
            f"adapter {ref!r} was trained on base model {base_name!r}, not on "
            f"{expected!r}: load it onto {base_name!r} (the model it was trained on)"
        )
    log.warning("adapter %s names base %r, not found here: loading it onto %r", ref, base, expected)
    return wanted


def describe(ref: str, kind: Kind, expected_base: str | None = None) -> ModelSource:
    """What ``ref`` is (see :class:`ModelSource`).

    Args:
        ref: preset name, hub id, local folder or storage URI.
        kind: ``vlm`` or ``lm`` (for resolving presets).
        expected_base: the base the caller will load an adapter onto (a preset name, hub
            id or folder); an adapter trained on another base is refused.

    Raises:
        AdapterBaseMismatchError: the adapter's base is not ``expected_base``.
        FileNotFoundError: a folder-like reference that does not exist.
    """
    from medray.models.registry import resolve

    local = localize(ref)
    folder = Path(local).expanduser()
    if not folder.is_dir():
        if ref.startswith((".", "/", "~")):
            raise FileNotFoundError(f"model folder {ref!r} does not exist")
        location = resolve(ref, kind)
        return ModelSource(ref, "preset", location, location, ref)
    marker = folder / FINAL_MARKER
    run = json.loads(marker.read_text()) if marker.is_file() else {}
    if not (folder / "adapter_config.json").is_file():
        return ModelSource(ref, "checkpoint", str(folder), str(folder), str(folder), run)
    peft_cfg = json.loads((folder / "adapter_config.json").read_text())
    base = run.get("base_model") or peft_cfg.get("base_model_name_or_path") or ""
    base_name = run.get("base_model_name") or base
    if expected_base is not None:
        base = _check_base(ref, base, base_name, expected_base, kind, known=bool(run))
    if not base:
        raise ValueError(
            f"adapter {ref!r} names no base model (no {FINAL_MARKER} and no "
            "base_model_name_or_path): say which base to load it onto"
        )
    return ModelSource(ref, "adapter", str(folder), base, base_name, run)


def load_processing(source: ModelSource, kind: Kind):
    """The processor (VLM) or tokenizer (text LM) saved beside the trained model, else the
    base's: the one the model was trained with."""
    from transformers import AutoProcessor, AutoTokenizer

    here = Path(source.path)
    saved = source.kind != "preset" and any(
        (here / f).is_file()
        for f in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
    )
    where = source.path if saved else source.base
    return (
        AutoProcessor.from_pretrained(where)
        if kind == "vlm"
        else AutoTokenizer.from_pretrained(where)
    )


def load_finetuned(
    ref: str,
    kind: Kind,
    *,
    expected_base: str | None = None,
    trainable: bool = False,
    device: str | None = "cpu",
    **model_kwargs: Any,
):
    """``(model, processing, source)`` for ``ref`` (see :func:`describe`).

    An adapter is merged into its base for inference, or kept as a trainable ``PeftModel``
    with ``trainable`` (GRPO). The model is in eval mode unless trainable.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    from medray.models.loading import load_lm, load_vlm

    source = describe(ref, kind, expected_base)
    model_kwargs.setdefault("dtype", torch.float32)
    if source.kind == "preset":
        model, processing = (load_vlm if kind == "vlm" else load_lm)(ref, **model_kwargs)
    else:
        cls = AutoModelForImageTextToText if kind == "vlm" else AutoModelForCausalLM
        model = cls.from_pretrained(source.base, **model_kwargs)
        processing = load_processing(source, kind)
        if source.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, source.adapter, is_trainable=trainable)
            if not trainable:
                model = model.merge_and_unload()
    if device is not None:  # None: leave placement to the trainer (DeepSpeed)
        model.to(device)
    if not trainable:
        model.eval()
    return model, processing, source


class AdapterHost:
    """One base model with named LoRA adapters attached on demand (and detached again).

    Args:
        base: preset name, hub id or folder of the base model.
        adapters: adapter name -> adapter folder or URI (checked against ``base``).
        kind: ``vlm`` or ``lm``.
        device: torch device.
    """

    def __init__(
        self,
        base: str,
        adapters: dict[str, str] | None = None,
        kind: Kind = "vlm",
        device: str = "cpu",
    ) -> None:
        self.base_ref = base
        self.kind = kind
        self.device = device
        self.model, self.processing, self.source = load_finetuned(base, kind, device=device)
        self.paths = {str(k): str(v) for k, v in (adapters or {}).items()}
        self.sources: dict[str, ModelSource] = {}
        self._processors: dict[str, Any] = {}
        self._peft = None  # PeftModel wrapping self.model once an adapter is attached
        self._loaded: set[str] = set()
        self.lock = threading.RLock()  # the active adapter is model state

    def names(self) -> list[str]:
        return sorted(self.paths)

    def loaded(self) -> list[str]:
        return sorted(self._loaded)

    def load(self, name: str) -> None:
        """Attach adapter ``name`` (no-op if attached); its base is checked first.

        Raises:
            KeyError: ``name`` is not configured.
            AdapterBaseMismatchError: it was trained on another base model.
        """
        if name not in self.paths:
            raise KeyError(name)
        with self.lock:
            if name in self._loaded:
                return
            src = describe(self.paths[name], self.kind, expected_base=self.base_ref)
            if src.kind != "adapter":
                raise ValueError(
                    f"adapter {name!r}: {self.paths[name]} is not a LoRA adapter folder"
                )
            if self._peft is None:
                from peft import PeftModel

                self._peft = PeftModel.from_pretrained(self.model, src.path, adapter_name=name)
                self._peft.eval()
            else:
                self._peft.load_adapter(src.path, adapter_name=name)
            self.sources[name] = src
            self._processors[name] = load_processing(src, self.kind)
            self._loaded.add(name)

    def unload(self, name: str) -> None:
        """Detach adapter ``name`` and free its weights (no-op if not attached).

        Removing the last adapter unwraps the base model again: peft cannot disable an
        adapter set that is empty (``disable_adapter`` raised KeyError on the next
        base-model request).
        """
        with self.lock:
            if name not in self._loaded or self._peft is None:
                return
            self._loaded.discard(name)
            self._processors.pop(name, None)
            if self._loaded:
                if name in self._peft.active_adapters:
                    self._peft.set_adapter(sorted(self._loaded)[0])
                self._peft.delete_adapter(name)
            else:
                self.model = self._peft.unload()
                self._peft = None
            log.info("adapter %s unloaded", name)

    def processing_for(self, adapter: str | None):
        """The processor/tokenizer to encode prompts for ``adapter`` (None: the base)."""
        return self._processors.get(adapter, self.processing) if adapter else self.processing

    @contextlib.contextmanager
    def active(self, adapter: str | None) -> Iterator[Any]:
        """The model with ``adapter`` active (None: the base, adapters disabled); hold
        :attr:`lock` around generation with it."""
        if adapter is not None:
            self.load(adapter)
            self._peft.set_adapter(adapter)
            yield self._peft
        elif self._peft is not None:
            with self._peft.disable_adapter():
                yield self._peft
        else:
            yield self.model
