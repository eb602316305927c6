#!/usr/bin/env bash
# gpu_check.sh's inference lines (also runnable alone, after gpu_check.sh's install step):
# panns-tag over 256 x 10 s files with a random Cnn14 (batch 32, fp32 and bf16 autocast, pinned
# non-blocking copies), whole-process files/s, then benchmarks/bench_tag_backends.py's model-only
# clips/s at batch 1, 32 and 64. Output appended to OUT_DIR/bench_tag.txt.
#   bash benchmarks/gpu_check_tag.sh [OUT_DIR]      (GPU_CHECK_SMOKE=1: 4 x 2 s files on the CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-outputs/gpu_check}}
mkdir -p "$OUT_DIR"
SMOKE=${GPU_CHECK_SMOKE:-0}
if [ "$SMOKE" = 1 ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
status=0
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
    "${TAG_ARGS[@]}" --precision $precision --out "$OUT_DIR/tags_$precision.jsonl" 2>"$OUT_DIR/tag_$precision.err" || status=1
  end=$(date +%s.%N)
  grep -v "no labels CSV" "$OUT_DIR/tag_$precision.err" || true
  echo "panns-tag, $TAG_FILES x ${TAG_SECONDS} s files, precision $precision: $($PY -c \
    "import sys; print(f'{int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.1f}')" "$TAG_FILES" "$begin" "$end") files/s (whole process)" \
    | tee -a "$OUT_DIR/bench_tag.txt"
done
$PY benchmarks/bench_tag_backends.py --checkpoint "$TAG_WORK/Cnn14_random.pth" "${BACKEND_ARGS[@]}" --batches $TAG_BATCHES \
  >>"$OUT_DIR/bench_tag.txt" 2>"$OUT_DIR/bench_tag_backends.err" || { status=1; tail -5 "$OUT_DIR/bench_tag_backends.err"; }
tail -20 "$OUT_DIR/bench_tag.txt"
exit $status
