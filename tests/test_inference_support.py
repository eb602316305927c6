"""Small checkpoints shared by the inference, panns-tag and panns-export tests (no tests here).

Each checkpoint is built once per test process (``lru_cache``) in a temporary folder removed at
exit: Cnn14-sized models take seconds to initialise and to write on two CPU cores.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from panns_lightning.inference import AudioTagger
from panns_lightning.labels import LabelSet, write_label_csv
from panns_lightning.models import FRONTEND_DEFAULTS, build_model, save_panns_checkpoint
from panns_lightning.training.module import TaggingModule
from shared_data import SHARED_AUDIOSET

SHARED_AUDIO = SHARED_AUDIOSET
EXAMPLE_WAV = SHARED_AUDIO / "R9_ZSCveAHg_7s.wav"
EXAMPLE_MP3 = SHARED_AUDIO / "R9_ZSCveAHg_7s.mp3"
AUDIOSET_CSV = SHARED_AUDIO / "class_labels_indices.csv"

# 8 kHz with a 160-sample hop (50 frames/s) and 32 mel bins keeps Cnn14-sized models cheap to run.
SMALL_FRONTEND: dict[str, Any] = dict(sample_rate=8000, window_size=256, hop_size=160, mel_bins=32, fmin=50, fmax=4000)
LABEL_NAMES = ["Speech", "Dog, bark", "Music", "Rain", "Engine"]
LABELS = [{"index": i, "mid": f"/t/{i}", "name": name} for i, name in enumerate(LABEL_NAMES)]


@functools.lru_cache(maxsize=None)
def workdir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="panns-inference-tests-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def lightning_checkpoint_content(model_name: str, **extra: Any) -> dict[str, Any]:
    """What Lightning writes for a TaggingModule: plain hyper-parameters + the state_dict."""
    torch.manual_seed(0)
    module = TaggingModule({"name": model_name, **SMALL_FRONTEND}, LABELS)
    return {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), **extra}


@functools.lru_cache(maxsize=None)
def cnn6_checkpoint() -> Path:
    """A 5-class Cnn6 Lightning checkpoint at 8 kHz."""
    path = workdir() / "cnn6.ckpt"
    torch.save(lightning_checkpoint_content("Cnn6"), path)
    return path


@functools.lru_cache(maxsize=None)
def sed_checkpoint() -> Path:
    """A 5-class Cnn14_DecisionLevelMax Lightning checkpoint at 8 kHz."""
    path = workdir() / "sed.ckpt"
    torch.save(lightning_checkpoint_content("Cnn14_DecisionLevelMax"), path)
    return path


@functools.lru_cache(maxsize=None)
def sed_tagger() -> AudioTagger:
    """The SED checkpoint loaded once (10 s windows); tests must not change it."""
    return AudioTagger(sed_checkpoint())


@functools.lru_cache(maxsize=None)
def published_cnn6() -> Path:
    """An upstream-format ``{"model": state_dict}`` Cnn6 at its paper front end, 527 classes.

    The name carries no zoo name, so loading it exercises the layout-based model inference.
    """
    torch.manual_seed(1)
    model = build_model("Cnn6", **FRONTEND_DEFAULTS["Cnn6"], classes_num=527)
    return save_panns_checkpoint(model, workdir() / "published_weights.pth")


@functools.lru_cache(maxsize=None)
def audioset_csv() -> Path:
    """AudioSet's class_labels_indices.csv (the shared copy, or a 527-class stand-in)."""
    if AUDIOSET_CSV.is_file():
        return AUDIOSET_CSV
    path = workdir() / "class_labels_indices.csv"
    write_label_csv(LabelSet.from_pairs((f"/m/{i}", f"Class {i}") for i in range(527)), path)
    return path


def randomise_(model: torch.nn.Module) -> None:
    """Random weights and BatchNorm statistics in place: a fresh init has identity BatchNorms, which
    would hide key mix-ups in a parity or export check (the STFT and mel matrices stay as built)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.dtype.is_floating_point or key.startswith(("spectrogram_extractor.", "logmel_extractor.")):
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            else:
                value.copy_(torch.randn(value.shape, generator=generator) * (0.05 if value.dim() > 1 else 0.3))
