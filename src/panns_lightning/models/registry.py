"""Models by name: the PANNs zoo (upstream class names) and each model's paper front end."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from torch import nn

from panns_lightning.input_limits import PANNS_SAMPLE_RATE

from . import cnn, mobilenet, resnet, waveform_cnn, wavegram

_CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {
    **cnn.VARIANTS,
    **resnet.VARIANTS,
    **mobilenet.VARIANTS,
    **waveform_cnn.VARIANTS,
    **wavegram.VARIANTS,
}

_PAPER_FRONTEND = dict(sample_rate=PANNS_SAMPLE_RATE, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000)

#: The paper's front-end settings per model (what its published checkpoint was trained with).
#: Waveform models (LeeNet, DaiNet, Res1dNet, Wavegram_Cnn14) only use ``sample_rate``.
FRONTEND_DEFAULTS: dict[str, dict[str, int]] = {name: dict(_PAPER_FRONTEND) for name in _CONSTRUCTORS}
FRONTEND_DEFAULTS["Cnn14_16k"] = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000)
FRONTEND_DEFAULTS["Cnn14_8k"] = dict(sample_rate=8000, window_size=256, hop_size=80, mel_bins=64, fmin=50, fmax=4000)
FRONTEND_DEFAULTS["Cnn14_mel32"] = dict(_PAPER_FRONTEND, mel_bins=32)
for _name in ("Cnn14_mel128", "Wavegram_Logmel128_Cnn14"):
    FRONTEND_DEFAULTS[_name] = dict(_PAPER_FRONTEND, mel_bins=128)

FRONTEND_KEYS = ("sample_rate", "window_size", "hop_size", "mel_bins", "fmin", "fmax")

#: Options of the log-mel front end: SpecAugment's stripes and the STFT implementation.
LOGMEL_OPTIONS = frozenset({"stft", "time_drop_width", "time_stripes_num", "freq_drop_width", "freq_stripes_num"})
#: Options of the Wavegram branch.
WAVEGRAM_OPTIONS = frozenset({"wave_conv2d"})
#: Models without a log-mel front end (raw waveform in).
WAVEFORM_ONLY = frozenset({"LeeNet11", "LeeNet24", "DaiNet19", "Res1dNet31", "Res1dNet51", "Wavegram_Cnn14"})
_WITH_WAVEGRAM = frozenset(wavegram.VARIANTS)


def list_models() -> list[str]:
    """Zoo names accepted by :func:`build_model`, sorted."""
    return sorted(_CONSTRUCTORS)


def build_model(
    name: str,
    sample_rate: int,
    window_size: int,
    hop_size: int,
    mel_bins: int,
    fmin: float,
    fmax: float,
    classes_num: int,
    **extra: Any,
) -> nn.Module:
    """Build zoo model ``name`` (e.g. ``"Cnn14"``) with freshly initialised weights.

    ``extra`` reaches the model constructor, e.g. SpecAugment stripes (``time_drop_width=32``)
    or ``stft="fft"`` for spectrogram models, ``wave_conv2d=True`` for Wavegram models. Front-end
    and branch options of parts a model does not have (an STFT for a waveform-only model) are
    not passed on: one training config can then name them for any architecture.
    """
    try:
        constructor = _CONSTRUCTORS[name]
    except KeyError:
        raise ValueError(unknown_model_message(name)) from None
    extra = applicable_options(name, extra)
    model = constructor(sample_rate, window_size, hop_size, mel_bins, fmin, fmax, classes_num, **extra)
    model.zoo_name = name  # lets error messages and model cards say "Cnn14", not the class name
    return model


def applicable_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the log-mel / Wavegram options that model ``name`` has no part for."""
    absent = set()
    if name in WAVEFORM_ONLY:
        absent |= LOGMEL_OPTIONS
    if name not in _WITH_WAVEGRAM:
        absent |= WAVEGRAM_OPTIONS
    return {key: value for key, value in options.items() if key not in absent}


def unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(match) for match in close)}?" if close else ""
    return f"Unknown model {name!r}.{hint} Valid names: {', '.join(list_models())}"
