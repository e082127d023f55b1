"""Contrastive fine-tuning of an open_clip model on image-report pairs, inside Ray Train
with DeepSpeed.

Ray Data turns preprocessed rows into model inputs (``ClipInputs``: decoded, transformed
pixels and tokenised report text) so that decoding scales with the cluster's CPUs; each
Ray Train worker runs ``clip_train_loop``: a DeepSpeed engine (ZeRO stage from config)
over open_clip's ``ClipLoss`` with features gathered across workers (a global batch of
negatives), validation image->text accuracy every epoch, and a checkpoint per epoch that
holds DeepSpeed's state (to resume after a failure) and the model in open_clip's own
folder layout (to load with ``open_clip.create_model_and_transforms("local-dir:...")``).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medray.train.settings import DeepSpeedSettings, FaultSettings

log = logging.getLogger(__name__)

MODEL_DIR = "model"  # the open_clip folder inside each checkpoint
STATE_FILE = "medray_clip_state.json"


@dataclass(frozen=True)
class ClipTrainSettings:
    """Model and optimisation of the CLIP fine-tune."""

    model: str = "tiny-clip"
    text: Literal["report", "findings", "impression"] = "report"
    freeze_visual_layers: int = 0  # patch embedding + this many first transformer blocks
    epochs: int = 5
    batch_size: int = 32  # per worker; the loss sees batch_size x num_workers pairs
    lr: float = 5e-6  # right for a pretrained ViT-B-32; a tiny model from scratch wants ~1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 0
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    fault: FaultSettings = field(default_factory=FaultSettings)


class ClipInputs:
    """Ray Data callable class (pandas): image bytes + report -> ``pixels`` and ``tokens``.

    Rows of ``train_split`` get the training transform (with open_clip's augmentation),
    the others the evaluation transform, so every split is prepared in one pass. Rows
    whose image does not decode come out with ``error`` set and no pixels; the job counts
    and reports them before filtering them out.
    """

    def __init__(self, model: str, text: str, train_split: str = "train") -> None:
        from medray.models.loading import load_clip

        _, self.preprocess_train, self.preprocess_val, self.tokenizer = load_clip(model)
        self.text = text
        self.train_split = train_split

    def __call__(self, batch):
        import pandas as pd

        from medray.imaging import ImageDecodeError, decode_image
        from medray.models.encoders import report_text

        pixels, texts, errors = [], [], []
        for data, f, i, split in zip(
            batch["image"], batch["findings"], batch["impression"], batch["split"], strict=True
        ):
            texts.append(report_text(f, i, self.text))
            try:
                image = decode_image(bytes(data))
            except (ImageDecodeError, TypeError) as e:
                pixels.append(None)
                errors.append(str(e))
                continue
            transform = self.preprocess_train if split == self.train_split else self.preprocess_val
            pixels.append(transform(image).numpy())
            errors.append("")
        blank = next((p for p in pixels if p is not None), None)
        if blank is None:
            blank = np.zeros((3, 1, 1), dtype=np.float32)
        tokens = self.tokenizer(texts).numpy()
        return pd.DataFrame(
            {
                "sample_id": batch["sample_id"],
                "split": batch["split"],
                "pixels": [p if p is not None else np.zeros_like(blank) for p in pixels],
                "tokens": list(tokens),
                "text": texts,
                "error": errors,
            }
        )


def freeze_early_visual_layers(model, n_blocks: int) -> int:
    """Freeze the patch embedding and the first ``n_blocks`` visual transformer blocks."""
    if n_blocks <= 0:
        return 0
    visual = model.visual
    blocks = visual.transformer.resblocks
    if n_blocks > len(blocks):
        raise ValueError(
            f"freeze_visual_layers={n_blocks} but the visual tower has {len(blocks)} blocks"
        )
    frozen = [visual.conv1, visual.ln_pre, *blocks[:n_blocks]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False
    for name in ("class_embedding", "positional_embedding"):
        getattr(visual, name).requires_grad = False
    return sum(p.numel() for m in frozen for p in m.parameters())


def unsqueeze_scalar_params(model) -> list[str]:
    """Give 0-dim parameters (CLIP's ``logit_scale``) shape [1]: DeepSpeed's broadcast of
    the initial weights fails on 0-dim tensors over gloo. Returns their names so the
    export can restore the original shape."""
    import torch

    names = []
    for name, p in list(model.named_parameters()):
        if p.ndim == 0:
            owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(
                owner,
                name.rpartition(".")[2],
                torch.nn.Parameter(p.data.reshape(1), requires_grad=p.requires_grad),
            )
            names.append(name)
    return names


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # As in open_clip: no decay on gains, biases, embeddings and the logit scale.
        (no_decay if p.ndim < 2 or "embedding" in name or "logit_scale" in name else decay).append(
            p
        )
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _materialise(shard, batch_size: int):
    """All of a (small) validation split as tensors: (pixels, tokens, texts)."""
    import torch

    pixels, tokens, texts = [], [], []
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        pixels.append(torch.from_numpy(np.stack(batch["pixels"])))
        tokens.append(torch.from_numpy(np.stack(batch["tokens"])))
        texts.extend(str(t) for t in batch["text"])
    if not texts:
        raise ValueError("the validation split is empty (or none of its images decode)")
    return torch.cat(pixels), torch.cat(tokens), texts


def encode_all(model, pixels, tokens, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image and text embeddings for tensors, in eval mode, no grad."""
    import torch

    model.eval()
    img, txt = [], []
    with torch.no_grad():
        for i in range(0, len(pixels), batch_size):
            img.append(model.encode_image(pixels[i : i + batch_size], normalize=True).float())
            txt.append(model.encode_text(tokens[i : i + batch_size], normalize=True).float())
    return torch.cat(img).cpu().numpy(), torch.cat(txt).cpu().numpy()


def split_metrics(model_ref: str, pixels, tokens, texts, ks) -> dict[str, float]:
    """Recall@K both ways of a CLIP model on prepared inputs of one split."""
    from medray.eval.retrieval import retrieval_metrics
    from medray.models.loading import load_clip

    model = load_clip(model_ref)[0]
    img, txt = encode_all(model, pixels, tokens)
    return retrieval_metrics(img, txt, texts, ks)


def export_open_clip(
    state_dict: dict, model_config: dict, out_dir: Path, scalars: list[str] = ()
) -> None:
    """Write weights + ``open_clip_config.json`` (copied from the source model) as open_clip's folder."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.reshape(()) if k in scalars else v).detach().cpu().contiguous()
        for k, v in state_dict.items()
    }
    save_file(tensors, out_dir / "open_clip_model.safetensors")
    (out_dir / "open_clip_config.json").write_text(json.dumps(model_config, indent=2))


def source_config(model_ref: str) -> dict:
    """The ``open_clip_config.json`` content of a model folder or hub id."""
    from open_clip.factory import _get_hf_config

    from medray.models.registry import resolve

    location = resolve(model_ref, "clip")
    folder = Path(location.removeprefix("local-dir:"))
    if folder.is_dir():
        return json.loads((folder / "open_clip_config.json").read_text())
    return _get_hf_config(location.removeprefix("hf-hub:"))


def clip_train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop.

    ``config``: ``settings`` (ClipTrainSettings), ``use_gpu``, ``steps_per_epoch`` (per
    worker). Datasets: ``train`` (split across workers), ``validation`` (whole, on every
    worker).
    """
    import deepspeed
    import open_clip
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train import Checkpoint

    from medray.eval.retrieval import image_to_text_accuracy
    from medray.models.loading import load_clip
    from medray.train.ray_hf import (
        InjectedFailure,
        deepspeed_config,
        gather_workers,
        skip_deepspeed_shm_build,
    )

    skip_deepspeed_shm_build()
    s: ClipTrainSettings = config["settings"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = (
        torch.device("cuda", ctx.get_local_rank()) if config["use_gpu"] else torch.device("cpu")
    )

    model, *_ = load_clip(s.model)
    scalars = unsqueeze_scalar_params(model)
    frozen = freeze_early_visual_layers(model, s.freeze_visual_layers)
    optimizer = torch.optim.AdamW(
        _param_groups(model, s.weight_decay), lr=s.lr, betas=(0.9, 0.98), eps=1e-6
    )
    total = max(1, config["steps_per_epoch"] * s.epochs)
    warm = s.warmup_steps

    def schedule(step: int) -> float:  # linear warmup, then cosine decay (open_clip's default)
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    if not dist.is_initialized():  # a single worker without a process group
        deepspeed.init_distributed(dist_backend="nccl" if config["use_gpu"] else "gloo")
    ds_config = deepspeed_config(
        s.deepspeed, micro_batch=s.batch_size, world_size=world, bf16=config["use_gpu"]
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model.to(device), optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    loss_fn = open_clip.ClipLoss(
        local_loss=False, gather_with_grad=world > 1, cache_labels=True, rank=rank, world_size=world
    )

    start_epoch, best, history, resumed = 0, -1.0, [], []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            engine.load_checkpoint(d, tag="ds", load_module_strict=False)
            state = json.loads((Path(d) / STATE_FILE).read_text())
        start_epoch, best, history = state["epoch"] + 1, state["best_val_i2t_acc"], state["history"]
        resumed = [*state.get("resumed_at_epochs", []), start_epoch]
        log.info("resumed from the end of epoch %d", state["epoch"])

    val = _materialise(ray.train.get_dataset_shard("validation"), 256)
    model_config = source_config(s.model)
    train_shard = ray.train.get_dataset_shard("train")
    first_attempt = checkpoint is None
    step = start_epoch * config["steps_per_epoch"]
    for epoch in range(start_epoch, s.epochs):
        engine.train()
        losses = []
        for batch in train_shard.iter_torch_batches(
            batch_size=s.batch_size, drop_last=True, device=device
        ):
            image_features, text_features, logit_scale = engine(
                batch["pixels"].float(), batch["tokens"].long()
            )[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
            engine.backward(loss)
            engine.step()
            with torch.no_grad():
                engine.module.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss))
            step += 1
            if (
                s.fault.fail_at_step
                and first_attempt
                and rank == 0
                and step == s.fault.fail_at_step
            ):
                raise InjectedFailure(f"injected failure at step {step} (fault.fail_at_step)")
        img, txt = encode_all(engine.module, val[0].to(device), val[1].to(device))
        val_acc = image_to_text_accuracy(img, txt, val[2])
        best = max(best, val_acc)
        epoch_metrics = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_i2t_acc": val_acc,
            "best_val_i2t_acc": best,
            "steps": step,
            "frozen_params": frozen,
            "resumed_at_epochs": resumed,
        }
        history.append(epoch_metrics)
        with tempfile.TemporaryDirectory(prefix="medray-clip-ckpt-") as d:
            engine.save_checkpoint(d, tag="ds")  # every rank writes its own shard files
            state_dict = (
                engine._zero3_consolidated_16bit_state_dict()
                if s.deepspeed.zero_stage == 3
                else engine.module.state_dict()
            )
            if rank == 0:
                export_open_clip(state_dict, model_config, Path(d) / MODEL_DIR, scalars)
                (Path(d) / STATE_FILE).write_text(
                    json.dumps(
                        {
                            "epoch": epoch,
                            "best_val_i2t_acc": best,
                            "history": history,
                            "resumed_at_epochs": resumed,
                        }
                    )
                )
            # Full history with every report: the summary reads the latest one (older
            # checkpoints are pruned to the best few).
            metrics = {**epoch_metrics, "history": history}
            if epoch == s.epochs - 1:
                metrics["workers"] = gather_workers()
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d))
