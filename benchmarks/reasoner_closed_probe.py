"""Diagnostic: does the tiny reasoner learn closed (yes/no) questions? A fast SFT loop.

    python -m benchmarks.reasoner_closed_probe --data $MEDRAY_HOME/data/vqa-synth \
        --model <tiny-qwen2-vl folder> --steps 300 --eval-every 50 \
        --train-query "content_type == 'modality' and answer_type == 'closed'"

Not the training job (that is ``jobs/train_sft.py``: Ray Train + DeepSpeed + trl): this is
the same model, the same rows (:func:`medray.train.sft_tasks.training_row`), the same
collator (:class:`medray.train.sft_recipe.VisionSFTCollator`) and the same optimiser
settings (AdamW, warmup + cosine, clipping 1.0) in a plain torch loop without Ray, so a
question such as "is the failure the data, the question type or the recipe?" costs minutes,
not a 30-minute job. ``--train-query`` / ``--eval-query`` (pandas queries over the
preprocessed columns) pick one question type; ``--freeze-vision`` keeps the vision tower
at its initialisation.

Closed accuracy is measured teacher-forced: for each held-out closed row the completion
with answer "Yes" and the one with "No" are scored, the lower loss wins (no generation).
Prints one line per evaluation: loss, closed accuracy, share of "Yes" predictions (a model
stuck at the prior predicts one answer for every row) and accuracy per (organ, content type).
"""

from __future__ import annotations

import argparse
import glob
import math
import time

import numpy as np
import pandas as pd
import torch


def load_split(data: str, split: str, query: str) -> pd.DataFrame:
    files = sorted(glob.glob(f"{data}/{split}/*.parquet"))
    if not files:
        raise SystemExit(f"no Parquet files under {data}/{split}")
    df = pd.concat([pd.read_parquet(f) for f in files])
    df = df.astype(object).where(df.notna(), None)
    return df.query(query) if query else df


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a jobs.preprocess output folder")
    p.add_argument("--model", required=True, help="tiny-qwen2-vl folder (or preset name)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pixels", type=int, default=112 * 112)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--n-eval", type=int, default=256)
    p.add_argument("--train-query", default="")
    p.add_argument("--eval-query", default="")
    p.add_argument("--freeze-vision", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--system",
        default=None,
        help="replace the serving system prompt for this run (a what-if; '' for an empty one)",
    )
    p.add_argument("--warmup", type=float, default=0.03, help="warmup share of the steps")
    p.add_argument(
        "--generate",
        type=int,
        default=0,
        help="score closed rows by greedy generation of up to N tokens (the job's way) "
        "instead of teacher-forced Yes/No (which reads a reference reasoning that may state "
        "the answer)",
    )
    a = p.parse_args()

    from transformers import AutoModelForImageTextToText

    from medray.models import resolve
    from medray.train.sft_recipe import SFTRecipeSettings, VisionSFTCollator, load_processor
    from medray.train.sft_tasks import training_row

    torch.set_num_threads(a.threads)
    if a.system is not None:
        import medray.contracts.reasoner as contract

        contract.SYSTEM_PROMPT = a.system
    torch.manual_seed(0)
    train_df = load_split(a.data, "train", a.train_query)
    test_df = load_split(a.data, "test", a.eval_query)
    train = [training_row("reasoner", r) for r in train_df.to_dict("records")]
    closed = test_df[test_df.answer_type == "closed"].sample(frac=1, random_state=0)
    held_out = closed.head(a.n_eval).to_dict("records")
    print(f"train rows {len(train)}, closed held-out rows {len(held_out)}")
    location = resolve(a.model, "vlm")
    proc = load_processor(location, SFTRecipeSettings(min_pixels=a.pixels, max_pixels=a.pixels))
    collate = VisionSFTCollator(proc)
    model = AutoModelForImageTextToText.from_pretrained(location, dtype=torch.float32)
    if a.freeze_vision:
        for name, param in model.named_parameters():
            if ".visual." in f".{name}":
                param.requires_grad_(False)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    warm = max(1, int(a.warmup * a.steps))

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, a.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def generated_answers(chunk: list[dict]) -> list[str | None]:
        from medray.contracts.reasoner import build_messages, parse_answer, row_image

        texts = [
            proc.apply_chat_template(build_messages(r, False), add_generation_prompt=True)
            for r in chunk
        ]
        proc.tokenizer.padding_side = "left"
        inputs = proc(
            text=texts, images=[row_image(r) for r in chunk], padding=True, return_tensors="pt"
        )
        proc.tokenizer.padding_side = "right"
        out = model.generate(
            **inputs,
            max_new_tokens=a.generate,
            do_sample=False,
            pad_token_id=proc.tokenizer.pad_token_id,
        )
        new = proc.tokenizer.batch_decode(
            out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return [(p.value.answer if (p := parse_answer(t)).value else None) for t in new]

    def evaluate() -> tuple[float, float, dict]:
        model.eval()
        rows = []
        with torch.no_grad():
            for i in range(0, len(held_out), 16):
                chunk = held_out[i : i + 16]
                if a.generate:
                    for r, pred in zip(chunk, generated_answers(chunk), strict=True):
                        ok = str(pred or "").strip().lower() == r["answer"].lower()
                        rows.append((r["organ"], r["content_type"], ok, pred))
                    continue
                pairs = [
                    training_row("reasoner", {**r, "answer": ans})
                    for r in chunk
                    for ans in ("Yes", "No")
                ]
                batch = collate(pairs)
                labels = batch.pop("labels")[:, 1:]
                logits = model(**batch).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(
                    logits.transpose(1, 2), labels.clamp(min=0), reduction="none"
                )
                nll = (nll * (labels != -100)).sum(1).view(-1, 2)
                for r, (yes, no) in zip(chunk, nll.tolist(), strict=True):
                    pred = "Yes" if yes < no else "No"
                    rows.append((r["organ"], r["content_type"], pred == r["answer"], pred))
        model.train()
        d = pd.DataFrame(rows, columns=["organ", "content_type", "ok", "pred"])
        by = d.groupby(["organ", "content_type"]).ok.mean().round(2).to_dict()
        return float(d.ok.mean()), float((d.pred == "Yes").mean()), by

    rng = np.random.default_rng(0)
    order, pos, losses, t0 = rng.permutation(len(train)), 0, [], time.time()
    for step in range(1, a.steps + 1):
        if pos + a.batch_size > len(order):
            order, pos = rng.permutation(len(train)), 0
        batch = collate([train[j] for j in order[pos : pos + a.batch_size]])
        pos += a.batch_size
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        if step % a.eval_every == 0 or step == a.steps:
            acc, yes, by = evaluate()
            print(
                f"step {step} loss {np.mean(losses[-25:]):.4f} closed_acc {acc:.3f} "
                f"yes_rate {yes:.2f} {by} {time.time() - t0:.0f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
