"""The PANNs log-mel front end: STFT → log-mel → bn0 → SpecAugment → mixup.

Upstream registers these modules directly on each model (``spectrogram_extractor``,
``logmel_extractor``, ``bn0``, ``spec_augmenter``), so the published checkpoints hold keys such as
``spectrogram_extractor.stft.conv_real.weight`` and ``bn0.running_mean`` at the top level. A
nested ``frontend.`` module would rename them; the mixin below installs the modules on the model
itself instead, so every spectrogram model shares one implementation and keeps upstream's keys.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torchlibrosa.augmentation import SpecAugmentation
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from .blocks import init_bn
from .mixup import mix_if_training

# Upstream's fixed STFT/mel settings (not tunable there either).
STFT_WINDOW = "hann"
STFT_CENTER = True
STFT_PAD_MODE = "reflect"
LOGMEL_REF = 1.0
LOGMEL_AMIN = 1e-10
LOGMEL_TOP_DB = None


class LogmelFrontEndMixin:
    """Adds the PANNs front end to an ``nn.Module`` subclass.

    Call :meth:`build_logmel_frontend` in ``__init__`` and :meth:`logmel` in ``forward``.
    """

    spectrogram_extractor: Spectrogram
    logmel_extractor: LogmelFilterBank
    bn0: nn.BatchNorm2d
    spec_augmenter: SpecAugmentation
    training: bool

    def build_logmel_frontend(
        self,
        sample_rate: int,
        window_size: int,
        hop_size: int,
        mel_bins: int,
        fmin: float,
        fmax: float,
        time_drop_width: int = 64,
        time_stripes_num: int = 2,
        freq_drop_width: int | None = None,
        freq_stripes_num: int = 2,
    ) -> None:
        """Register the front-end modules under upstream's attribute names.

        ``freq_drop_width`` defaults to ``mel_bins // 8``: the paper's 8 for 64 mel bins, and
        upstream's 4 / 16 for its 32 / 128-bin variants.
        """
        # torchlibrosa assigns CPU tensors to ``.data``, which fails under a meta default device
        # (used to read a model's key layout without allocating it); build those two on CPU then.
        device = "cpu" if torch.get_default_device().type == "meta" else None
        with torch.device(device) if device else contextlib.nullcontext():
            self._build_extractors(sample_rate, window_size, hop_size, mel_bins, fmin, fmax)
        self.spec_augmenter = build_spec_augmenter(
            mel_bins, time_drop_width, time_stripes_num, freq_drop_width, freq_stripes_num
        )
        self.bn0 = nn.BatchNorm2d(mel_bins)
        init_bn(self.bn0)

    def _build_extractors(
        self, sample_rate: int, window_size: int, hop_size: int, mel_bins: int, fmin: float, fmax: float
    ) -> None:
        self.spectrogram_extractor = Spectrogram(
            n_fft=window_size,
            hop_length=hop_size,
            win_length=window_size,
            window=STFT_WINDOW,
            center=STFT_CENTER,
            pad_mode=STFT_PAD_MODE,
            freeze_parameters=True,
        )
        self.logmel_extractor = LogmelFilterBank(
            sr=sample_rate,
            n_fft=window_size,
            n_mels=mel_bins,
            fmin=fmin,
            fmax=fmax,
            ref=LOGMEL_REF,
            amin=LOGMEL_AMIN,
            top_db=LOGMEL_TOP_DB,
            freeze_parameters=True,
        )

    def logmel(
        self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, T]`` waveform → ``[B', 1, frames, mel_bins]`` normalised log-mel.

        SpecAugment and mixup act in training mode only; with mixup ``B' = B // 2``.
        """
        x = self.logmel_extractor(self.spectrogram_extractor(waveform))
        # bn0 normalises each mel bin, so the mel axis is moved onto the channel axis for it.
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        if self.training:
            x = self.spec_augmenter(x)
        return mix_if_training(x, mixup_lambda, self.training)


def build_spec_augmenter(
    mel_bins: int,
    time_drop_width: int = 64,
    time_stripes_num: int = 2,
    freq_drop_width: int | None = None,
    freq_stripes_num: int = 2,
) -> SpecAugmentation:
    """SpecAugment with the paper's stripes (2 time masks of ≤64 frames, 2 freq masks)."""
    return SpecAugmentation(
        time_drop_width=time_drop_width,
        time_stripes_num=time_stripes_num,
        freq_drop_width=mel_bins // 8 if freq_drop_width is None else freq_drop_width,
        freq_stripes_num=freq_stripes_num,
    )
