#!/usr/bin/env bash
# One run of the demo's reasoner SFT (pipeline_tiny.yaml's sft_reasoner section, unchanged),
# scored by the job's own evaluation on the validation split: the trial behind the JSON
# validity figures in docs/demo.md.
#   bash benchmarks/sft_reasoner_trial.sh DATA NAME [key=value ...]
# DATA: a preprocessed output with a validation split (a demo run's <run>/data folder).
# Prints NAME, the wall time, the losses and the evaluation's figures; the run is in
# $MEDRAY_HOME/runs/NAME.
set -euo pipefail
data=$1 name=$2
shift 2
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
[ -n "${PYTHON:-}" ] || [ ! -x .venv/bin/python ] || py=.venv/bin/python  # make install's venv
config=$(mktemp --suffix=.yaml)
trap 'rm -f "$config"' EXIT
"$py" - "$data" "$config" <<'PY'
import sys

import yaml

d = yaml.safe_load(open("jobs/configs/pipeline_tiny.yaml"))["sft_reasoner"]
d["data"].update(input=sys.argv[1], eval_split="validation")
d["eval"] = {"enabled": True}
yaml.safe_dump(d, open(sys.argv[2], "w"))
PY
t0=$(date +%s)
"$py" -m jobs.train_sft --config "$config" run.name="$name" "$@" > "/tmp/$name.log" 2>&1 \
    || { tail -20 "/tmp/$name.log"; exit 1; }
"$py" - "$name" "$(( $(date +%s) - t0 ))" <<'PY'
import json
import os
import sys

name, seconds = sys.argv[1], sys.argv[2]
home = os.environ.get("MEDRAY_HOME", os.path.expanduser("~/.medray"))
s = json.load(open(os.path.join(home, "runs", name, "summary.json")))
e = s["eval"]
keep = ("n", "json_validity", "closed_accuracy", "open_accuracy", "box_rate")
print(name, f"{seconds}s", "loss", round(s["loss_first"], 3), "->", round(s["loss_last"], 3),
      {k: e[k] for k in keep if k in e}, "orders", sorted({w["train_order"] for w in s["workers"]}))
PY
