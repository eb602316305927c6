#!/usr/bin/env bash
# make hear-check: run the official HEAR 2021 validator (PyPI package hearvalidator) against
# panns_lightning.hear on two exports written for the purpose, each read with no model name or front
# end but the model card inside it: a `panns-export --format panns` file of a 16 kHz, 32-mel Cnn6
# (a front end upstream's classes cannot load) and a Cnn14 saved as `model.pth` (a layout that fits
# Cnn14 and the Cnn14_DecisionLevel models alike, and a name that says neither).
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
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=3  # TensorFlow is imported, never used: keep its start-up chatter out

HEAR_VENV=${HEAR_VENV:-.venv-hear}
TORCH_VENV=${TORCH_VENV:-.venv}
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
# Training checkpoints as panns-train writes them (random weights, the card from the module's own
# checkpoint hook), then exported to upstream's format by panns-export with no flags.
"$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path

import torch

from panns_lightning.models import FRONTEND_DEFAULTS
from panns_lightning.training.module import TaggingModule

work = Path(sys.argv[1])
models = {
    "cnn6_16k_32mel": ("Cnn6", dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000), 12),
    "cnn14": ("Cnn14", FRONTEND_DEFAULTS["Cnn14"], 527),
}
for stem, (name, frontend, classes) in models.items():
    torch.manual_seed(0)
    labels = [{"index": i, "mid": f"/hear/{i}", "name": f"class {i}"} for i in range(classes)]
    module = TaggingModule({"name": name, **frontend}, labels)
    checkpoint = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, work / f"{stem}.ckpt")
    print(f"hear-check: wrote a randomly initialised {name} ({frontend['sample_rate']} Hz, {frontend['mel_bins']} mels) to {work / stem}.ckpt")
EOF
"$PY" -m panns_lightning.cli.export "$WORK/cnn6_16k_32mel.ckpt" --format panns --out "$WORK/cnn6_16k_32mel.pth" --seconds 1
"$PY" -m panns_lightning.cli.export "$WORK/cnn14.ckpt" --format panns --out "$WORK/model.pth" --seconds 1

# CUDA_VISIBLE_DEVICES="" keeps TensorFlow from probing for GPUs; the validator picks the CPU.
for CKPT in "$WORK/cnn6_16k_32mel.pth" "$WORK/model.pth"; do
    echo "== hear-validator panns_lightning.hear --model $CKPT =="
    CUDA_VISIBLE_DEVICES="" "$HEAR_VENV/bin/hear-validator" panns_lightning.hear --model "$CKPT" --device cpu
done
