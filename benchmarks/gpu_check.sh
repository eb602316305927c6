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
PY=$PY bash benchmarks/gpu_check_tag.sh "$OUT_DIR" || status=1
stamp "done (exit $status)"
exit $status
