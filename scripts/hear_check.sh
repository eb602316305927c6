#!/usr/bin/env bash
# make hear-check: run the official HEAR 2021 validator (PyPI package hearvalidator) against
# panns_lightning.hear with a small checkpoint written for the purpose.
#
# hearvalidator imports TensorFlow, so it lives in its own virtualenv ($HEAR_VENV, gitignored),
# never in the project's. torch and the project's other dependencies are not installed twice: the
# project venv's site-packages ($TORCH_VENV) is appended to the HEAR venv's path, so torch, torchaudio
# and Lightning come from there (a CPU-only torch from PyPI is not published for Linux; its default
# wheel pulls several GB of CUDA libraries). What the HEAR venv installs itself: tensorflow-cpu,
# hearvalidator (--no-deps: it asks for "tensorflow", which tensorflow-cpu provides under another
# name, and "torch", which comes from the project venv) and this package (--no-deps, editable).
#
#   scripts/hear_check.sh                 # HEAR_VENV=.venv-hear TORCH_VENV=.venv
#   HEAR_MODEL=Cnn14_16k scripts/hear_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3  # TensorFlow is imported, never used: keep its start-up chatter out

HEAR_VENV=${HEAR_VENV:-.venv-hear}
TORCH_VENV=${TORCH_VENV:-.venv}
# A small model keeps the check fast on a CPU; any model panns_lightning.hear supports works.
HEAR_MODEL=${HEAR_MODEL:-Cnn6}
WORK=${HEAR_WORK:-outputs/hear-check}

torch_site=$("$TORCH_VENV/bin/python" -c "import sysconfig, torch; print(sysconfig.get_paths()['purelib'])") || {
    echo "hear-check: $TORCH_VENV/bin/python cannot import torch; run make install first (or set TORCH_VENV)" >&2
    exit 1
}

if [ ! -f "$HEAR_VENV/.installed" ]; then
    echo "== creating $HEAR_VENV (tensorflow-cpu + hearvalidator; torch from $TORCH_VENV) =="
    # The project venv's interpreter makes it: the same Python version as the packages it borrows.
    "$TORCH_VENV/bin/python" -m venv "$HEAR_VENV"
    hear_site=$("$HEAR_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # A plain path line: appended after the HEAR venv's own packages, and the project venv's .pth
    # files (its editable install of panns_lightning) are not run.
    echo "$(cd "$torch_site" && pwd)" > "$hear_site/zz_project_venv.pth"
    "$HEAR_VENV/bin/python" -m pip install --quiet tensorflow-cpu
    "$HEAR_VENV/bin/python" -m pip install --quiet --no-deps hearvalidator
    "$HEAR_VENV/bin/python" -m pip install --quiet --no-deps -e .
    touch "$HEAR_VENV/.installed"
fi
PY="$HEAR_VENV/bin/python"
"$PY" -c "
import panns_lightning, tensorflow, torch
print(f'hear-check: panns_lightning from {panns_lightning.__path__[0]}, torch {torch.__version__}, tensorflow {tensorflow.__version__}')"

mkdir -p "$WORK"
CKPT="$WORK/$HEAR_MODEL.pth"
"$PY" - "$HEAR_MODEL" "$CKPT" <<'EOF'
import sys

import torch

from panns_lightning.models import FRONTEND_DEFAULTS, build_model, save_panns_checkpoint

name, path = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = build_model(name, **FRONTEND_DEFAULTS[name], classes_num=527)
save_panns_checkpoint(model, path)
print(f"hear-check: wrote a randomly initialised {name} ({FRONTEND_DEFAULTS[name]['sample_rate']} Hz) to {path}")
EOF

echo "== hear-validator panns_lightning.hear --model $CKPT =="
# CUDA_VISIBLE_DEVICES="" keeps TensorFlow from probing for GPUs; the validator picks the CPU.
CUDA_VISIBLE_DEVICES="" "$HEAR_VENV/bin/hear-validator" panns_lightning.hear --model "$CKPT" --device cpu
