#!/usr/bin/env bash
# make demo, second half: fine-tune the demo's pretrained Cnn6 on a tiny synthetic ESC-50-layout
# dataset (10 classes the pretraining never saw × 20 clips, 5 official-style folds, 1 s at 16 kHz),
# 5-fold CV with a few steps per fold, then the same from a randomly initialised backbone.
#   scripts/demo_finetune.sh outputs/demo/runs/<time>/checkpoints/best.ckpt
set -euo pipefail
CKPT=${1:?usage: scripts/demo_finetune.sh PRETRAINED_CKPT [WORK_DIR]}
WORK=${2:-data/demo_finetune}
RUNS=${RUNS:-outputs/demo_finetune/$(date +%Y%m%d-%H%M%S)}
PY=${PY:-.venv/bin/python}
SECONDS_PER_CLIP=1
STEPS=${STEPS:-20}

$PY -c "from panns_lightning.datasets.esc50 import write_synthetic_esc50 as w; w('$WORK/raw', clip_seconds=$SECONDS_PER_CLIP)"
rm -rf "$WORK/shards"
$PY -m panns_lightning.cli.prepare esc50 --root "$WORK/raw" --out "$WORK/shards" --sample-rate 16000 \
    --clip-seconds $SECONDS_PER_CLIP --workers 2 --min-shards 4 --quiet

# The scratch run must use the pretrained model's architecture and front end: read them from its model card.
MODEL=$($PY -c "
import sys
from panns_lightning.models.reader import read_card
card = read_card(sys.argv[1])
print(' '.join(f'model.{k}={v}' for k, v in {'name': card.model, **card.frontend}.items()) if card else '')" "$CKPT")
# FT_ARGS: extra overrides for both fine-tuning sweeps (make demo FT_ARGS="speed=reference").
COMMON=(-m experiment=demo_finetune "data.fold=1,2,3,4,5" "data.train_dir=$WORK/shards" "data.test_dir=$WORK/shards"
        "trainer.max_steps=$STEPS" $MODEL ${FT_ARGS:-})

echo "== fine-tuning the pretrained $CKPT (5 folds) =="
mkdir -p "$RUNS"
run_folds() {  # name, extra overrides...; the full log stays on disk, its tail is shown on failure
    local name=$1; shift
    if ! $PY -m panns_lightning.cli.finetune "${COMMON[@]}" "$@" "hydra.sweep.dir=$RUNS/$name" > "$RUNS/$name.log" 2>&1; then
        tail -n 40 "$RUNS/$name.log"; echo "fine-tuning ($name) failed: see $RUNS/$name.log" >&2; exit 1
    fi
    grep -E "accuracy [0-9]|^fold|^---|^[0-9] |^mean" "$RUNS/$name.log" || true
}
run_folds pretrained "finetune.checkpoint=$CKPT"
echo "== the same from a random initialisation (5 folds) =="
run_folds scratch "finetune.checkpoint=null"

$PY - "$RUNS" <<'PY'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
print(f"\n{'backbone':<12}{'fold accuracies':<36}{'mean ± std':>16}")
print("-" * 64)
for name in ("pretrained", "scratch"):
    s = json.loads((runs / name / "cv_summary.json").read_text())
    folds = " ".join(f"{f['accuracy']:.2f}" for f in s["folds"])
    print(f"{name:<12}{folds:<36}{s['accuracy_mean']:>9.3f} ± {s['accuracy_std']:.3f}")
print(f"\nreports: {runs}/pretrained/cv_summary.md, {runs}/scratch/cv_summary.md (+ confusion_matrix.png)")
PY
