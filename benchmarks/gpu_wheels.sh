#!/usr/bin/env bash
# Wheels of what this project needs and a bare GPU machine image may lack, for Python 3.12 on
# x86-64 Linux, into .whl/ (git-ignored): benchmarks/gpu_check.sh installs from there when the
# GPU machine cannot reach PyPI. Run it on a machine that can (this one), once.
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]      # default 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
PY=${PY:-.venv/bin/python}
mkdir -p .whl
# Pure-Python or manylinux wheels; versions as pinned/resolved in this project's venv.
PACKAGES=(
  hydra-core==1.3.8 omegaconf==2.3.1 webdataset==1.0.2 braceexpand==0.1.7 torchlibrosa==0.1.0
  panns-inference==0.1.1 librosa==0.11.0 lazy_loader audioread soxr pooch platformdirs decorator
  soundfile==0.14.0 cffi pycparser
)
$PY -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PACKAGES[@]}" 2> >(grep -v "is ignored" >&2)
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) is published as a source archive only.
$PY -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3 2> >(grep -v "is ignored" >&2)
ls -1 .whl
du -sh .whl
