#!/usr/bin/env bash
# bash gpu_device_run.sh   (on the lent GPU machine, from a folder holding after/ [before/] whl/)
# One device call for benchmarks/gpu_models.py: installs the carried wheels (transformers
# 5.23, peft, open_clip and its needs), builds the real-size random-weight presets on the
# GPU, runs every section with the code in after/, the reasoner rows again with the code
# in before/ (when present: the tree before a fix), and the after/before ratios. Results
# land in $OUT (after.jsonl, before.jsonl, compare.jsonl, logs). GPU22_TINY=1 PY=python
# rehearses the same steps on a CPU at tiny size.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/gpu22-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MEDRAY_HOME=${MEDRAY_HOME:-/tmp/medray-home}
PY=${PY:-python3}
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START ))s] $*"; }
short() { cut -c1-220; }

if [ -z "${GPU22_TINY:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$HERE"/whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.mem \
    --format=csv | tee "$OUT/nvidia-smi.txt"
  COMMON=(--budget-s "${REASONER_BUDGET_S:-160}")
  VLM_PRESET=qwen2-vl-2b-random
else
  COMMON=(--tiny --device cpu)
  VLM_PRESET=tiny-qwen2-vl
fi

cd "$HERE/after" || exit 4
stamp "build"
if [ -z "${GPU22_TINY:-}" ]; then
  timeout "${BUILD_S:-120}" $PY -m medray.cli.main models build --random-weights \
    qwen2-vl-2b qwen2.5-0.5b clip-vit-b-32 2>&1 | grep -v "Writing\|Loading" | tee "$OUT/build.log"
fi
VLM=$($PY -c "from medray.models import resolve; print(resolve('$VLM_PRESET'))" 2>/dev/null | tail -1)
stamp "after: $VLM"
timeout "${AFTER_S:-280}" $PY -m benchmarks.gpu_models "${COMMON[@]}" --out "$OUT/after.jsonl" \
  2>"$OUT/after.err" | short
stamp "after done (rc ${PIPESTATUS[0]})"

if [ -d "$HERE/before" ]; then
  cd "$HERE/before" || exit 5
  timeout "${BEFORE_S:-90}" $PY -m benchmarks.gpu_models "${COMMON[@]}" --label before \
    --sections reasoner --vlm "$VLM" --parts scored --batches "${BEFORE_BATCHES:-1,32}" \
    --latency-requests 3 --out "$OUT/before.jsonl" 2>"$OUT/before.err" | short
  stamp "before done (rc ${PIPESTATUS[0]})"
  cd "$HERE/after" || exit 6
  $PY -m benchmarks.gpu_models --compare "$OUT/before.jsonl" "$OUT/after.jsonl" \
    >"$OUT/compare.jsonl"
fi
echo "----- errors (tails)"
tail -n 4 "$OUT"/*.err
echo "----- table"
cat "$OUT"/after.jsonl "$OUT"/compare.jsonl 2>/dev/null >/tmp/gpu22-all.jsonl
$PY -m benchmarks.gpu_models --table /tmp/gpu22-all.jsonl | cut -c1-400
stamp "end"
