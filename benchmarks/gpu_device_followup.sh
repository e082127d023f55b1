#!/usr/bin/env bash
# bash gpu_device_followup.sh   (the second device call of issue 22, same folder layout as
# gpu_device_run.sh): where the serving path's decode time goes (gpu_serve_overhead), the
# batch-32 rows with a LoRA adapter, and main's reasoner at batch 32 (before/after TTFT).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/gpu22-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MEDRAY_HOME=${MEDRAY_HOME:-/tmp/medray-home}
PY=${PY:-python3}
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START ))s] $*"; }
if [ -z "${GPU22_TINY:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$HERE"/whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site
  VLM_PRESET=qwen2-vl-2b-random B=32 TOK=16 DEV=()
else
  VLM_PRESET=tiny-qwen2-vl B=2 TOK=4 DEV=(--device cpu)
fi
cd "$HERE/after" || exit 4
if [ -z "${GPU22_TINY:-}" ]; then
  timeout 90 $PY -m medray.cli.main models build --random-weights qwen2-vl-2b 2>&1 | tail -2
fi
VLM=$($PY -c "from medray.models import resolve; print(resolve('$VLM_PRESET'))" 2>/dev/null | tail -1)
stamp "overhead"
timeout "${OVERHEAD_S:-110}" $PY -m benchmarks.gpu_serve_overhead --vlm "$VLM" "${DEV[@]}" \
  --tokens "$TOK" --reps 2 --batches "1,$B" 2>"$OUT/overhead.err" | tee "$OUT/overhead.txt" | cut -c1-200
stamp "after: batch $B with LoRA"
timeout "${AFTER_S:-90}" $PY -m benchmarks.gpu_models "${DEV[@]}" --vlm "$VLM" --sections reasoner \
  --batches "$B" --parts lora --reps 1 --label after2 --out "$OUT/after2.jsonl" \
  2>"$OUT/after2.err" | cut -c1-200
stamp "before: batch $B"
cd "$HERE/before" || exit 5
timeout "${BEFORE_S:-50}" $PY -m benchmarks.gpu_models "${DEV[@]}" --vlm "$VLM" --sections reasoner \
  --batches "$B" --parts none --reps 1 --label before2 --out "$OUT/before2.jsonl" \
  2>"$OUT/before2.err" | cut -c1-200
cd "$HERE/after" && $PY -m benchmarks.gpu_models --compare "$OUT/before2.jsonl" "$OUT/after2.jsonl"
tail -n 3 "$OUT"/*.err | cut -c1-300
stamp "end"
