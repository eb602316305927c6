#!/usr/bin/env bash
# Issue 12's whole GPU table in one go, on a bare GPU machine, in about 6 minutes (H100):
#   1. install: from .whl/ when present (made by benchmarks/gpu_wheels.sh, for a machine without
#      PyPI), else `pip install -e .[dev]`;
#   2. benchmarks/gpu_sanity.py: cuFFT = conv log-mel, bf16 gradients, compile = eager, no host
#      sync in the training step (torch.cuda.set_sync_debug_mode);
#   3. benchmarks/bench_train.py: train step, batch 32 x 10 s, each lever on/off, reference rows,
#      Cnn14 (plus compile) and Wavegram_Logmel_Cnn14;
#   4. benchmarks/bench_loop.py: panns-train's whole loop vs the bare step, 8 loader workers;
#   5. inference: panns-tag over 256 x 10 s files (random Cnn14, batch 32, fp32 and bf16 autocast,
#      pinned non-blocking copies) and benchmarks/bench_tag_backends.py's model-only clips/s.
# Everything is also written under OUT_DIR (default $OUT on the device tool, else outputs/gpu_check).
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# GPU_CHECK_SMOKE=1 runs the same pipeline at toy sizes on the CPU (to check the script itself).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-outputs/gpu_check}}
mkdir -p "$OUT_DIR"
SMOKE=${GPU_CHECK_SMOKE:-0}
if [ "$SMOKE" = 1 ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
export PYTHONUNBUFFERED=1
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start )) s] $*"; }

stamp "install"
if [ "$SMOKE" = 1 ]; then
  :  # the local venv
elif ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD/src:$PWD/benchmarks:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  $PY -m pip install -q -e '.[dev]' || exit 1
fi
export PANNS_CONFIG_DIR=$PWD/conf
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT_DIR/device.txt"

status=0
if [ "$SMOKE" = 1 ]; then
  TRAIN_ARGS=(--device cpu --batch 2 --seconds 1 --steps 1 --warmup 2 --repeats 1)
  LOOP_ARGS=(--device cpu --model Cnn6 --seconds 1 --rate 8000 --batch 8 --steps 3 --warmup-steps 2 --clips 64 --workers 1
             --loader-seconds 1 --work "$OUT_DIR/bench_loop")
else
  stamp "sanity checks"
  $PY benchmarks/gpu_sanity.py 2>&1 | tee "$OUT_DIR/sanity.txt" || status=1
  TRAIN_ARGS=(--device cuda --batch 32 --seconds 10 --steps 10 --warmup 3 --repeats 2)
  LOOP_ARGS=(--device cuda --rows ours,reference-fp32 --steps 60 --warmup-steps 15 --clips 256 --work /tmp/bench_loop)
fi

stamp "train step: Cnn14 (levers on/off, ablation, compile)"
$PY benchmarks/bench_train.py "${TRAIN_ARGS[@]}" --models Cnn14 --ablate --compile 2>&1 \
  | grep -v -E "UserWarning|warnings.warn|self\.log" | tee "$OUT_DIR/bench_train_cnn14.txt" || status=1
stamp "train step: Wavegram_Logmel_Cnn14"
$PY benchmarks/bench_train.py "${TRAIN_ARGS[@]}" --models Wavegram_Logmel_Cnn14 2>&1 \
  | grep -v -E "UserWarning|warnings.warn|self\.log" | tee "$OUT_DIR/bench_train_wavegram.txt" || status=1
stamp "whole loop: panns-train vs bare step"
$PY benchmarks/bench_loop.py "${LOOP_ARGS[@]}" 2>&1 | grep -v -E "UserWarning|warnings.warn" \
  | tee "$OUT_DIR/bench_loop.txt" || status=1
stamp "inference: panns-tag over a folder (fp32, bf16), model only"
TAG_WORK=${TAG_WORK:-/tmp/bench_tag}
if [ "$SMOKE" = 1 ]; then
  TAG_FILES=4; TAG_SECONDS=2; TAG_ARGS=(--device cpu --backend torch --batch-size 4 --workers 1); TAG_BATCHES=1,4
  BACKEND_ARGS=(--device cpu --seconds 2 --repeats 1 --agreement-windows 4 --onnx-cache "$TAG_WORK/onnx")
else
  TAG_FILES=256; TAG_SECONDS=10; TAG_ARGS=(--device cuda --batch-size 32); TAG_BATCHES=1,32,64
  BACKEND_ARGS=(--device cuda --seconds 10 --repeats 3 --agreement-windows 64)
fi
PYTHONPATH=$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH} $PY -c "import sys; from pathlib import Path; from bench_tag import make_fixtures; \
  Path(sys.argv[1]).mkdir(parents=True, exist_ok=True); make_fixtures(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))" \
  "$TAG_WORK" "$TAG_FILES" "$TAG_SECONDS" || status=1
for precision in 32 bf16; do
  begin=$(date +%s.%N)
  $PY -m panns_lightning.cli.tag "$TAG_WORK/clips_${TAG_FILES}x${TAG_SECONDS}s" --checkpoint "$TAG_WORK/Cnn14_random.pth" \
    "${TAG_ARGS[@]}" --precision $precision --out "$OUT_DIR/tags_$precision.jsonl" 2>&1 | grep -v "no labels CSV" || status=1
  echo "panns-tag, $TAG_FILES files, precision $precision: $($PY -c "import sys; print(f'{int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.1f}')" \
    "$TAG_FILES" "$begin" "$(date +%s.%N)") files/s (whole process)" | tee -a "$OUT_DIR/bench_tag.txt"
done
$PY benchmarks/bench_tag_backends.py --checkpoint "$TAG_WORK/Cnn14_random.pth" "${BACKEND_ARGS[@]}" --batches $TAG_BATCHES 2>&1 \
  | grep -v "no labels CSV" | tee -a "$OUT_DIR/bench_tag.txt" || status=1
stamp "done (exit $status)"
exit $status
