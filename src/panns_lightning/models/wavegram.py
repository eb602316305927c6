"""Wavegram models: a learned 1-D "spectrogram" from the raw waveform (paper Sec. 3.3).

``Wavegram_Logmel_Cnn14`` concatenates the Wavegram with the log-mel feature map after
``conv_block1``; ``Wavegram_Cnn14`` feeds the Wavegram alone into Cnn14's blocks 2..6.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBlock, ConvPreWavBlock, batch_norm_any_rank, conv1d_as_2d, init_bn, init_layer
from .cnn import CNN14_CHANNELS, CNN14_POOLS, Cnn, ConvStackMixin
from .heads import ClipHeadMixin, pool_freq_then_time
from .mixup import mix_if_training

# pre_conv0 (stride 5) and three max-pools of 4 downsample by 320 samples: one Wavegram frame
# per log-mel frame at upstream's 32 kHz / hop 320; pre_block4 then halves time like conv_block1.
WAVEGRAM_HOP = 5 * 4 * 4 * 4
WAVEGRAM_CHANNELS = 4  # 'channels' of the 2-D Wavegram fed to pre_block4


class WavegramMixin:
    """Registers and runs the Wavegram branch (``pre_conv0``, ``pre_bn0``, ``pre_block1..4``).

    ``wave_conv2d=True`` runs the 1-D convolutions as 1 x k 2-D ones on ``[B, C, 1, T]`` (same
    weights and keys, same result): unlike a 3-D tensor, that can be channels-last, which is
    where the GPU's fast kernels are. Upstream's 1-D layout is the default.
    """

    def build_wavegram(self, freq_bins: int, wave_conv2d: bool = False) -> None:
        """``freq_bins``: the Wavegram's frequency axis (half the mel bins, to meet
        ``conv_block1``'s output); ``pre_block3`` emits ``4 * freq_bins`` channels that are
        folded into 4 channels x ``freq_bins`` bins."""
        self.wavegram_freq_bins = freq_bins
        self.wave_conv2d = bool(wave_conv2d)
        self.pre_conv0 = nn.Conv1d(1, 64, kernel_size=11, stride=5, padding=5, bias=False)
        self.pre_bn0 = nn.BatchNorm1d(64)
        self.pre_block1 = ConvPreWavBlock(64, 64)
        self.pre_block2 = ConvPreWavBlock(64, 128)
        self.pre_block3 = ConvPreWavBlock(128, WAVEGRAM_CHANNELS * freq_bins)
        self.pre_block4 = ConvBlock(WAVEGRAM_CHANNELS, 64)
        init_layer(self.pre_conv0)
        init_bn(self.pre_bn0)

    def wavegram(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` → ``[B, 64, ≈T / 640, freq_bins]``."""
        if self.wave_conv2d:
            x = waveform[:, None, None, :]
            if self.pre_block4.conv1.weight.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)
            x = F.relu(batch_norm_any_rank(self.pre_bn0, conv1d_as_2d(self.pre_conv0, x)))
        else:
            x = F.relu(self.pre_bn0(self.pre_conv0(waveform[:, None, :])))
        for block in (self.pre_block1, self.pre_block2, self.pre_block3):
            x = block(x, pool_size=4)
        # Fold channels into (4, freq_bins) and put time before frequency, as log-mel is laid out.
        x = x.reshape(x.shape[0], -1, self.wavegram_freq_bins, x.shape[-1]).transpose(2, 3)
        return self.pre_block4(x, pool_size=(2, 1), pool_type="avg")


class WavegramLogmelCnn(WavegramMixin, Cnn):
    """Wavegram-Logmel-Cnn14: log-mel ``conv_block1`` output ‖ Wavegram → ``conv_block2..6``.

    Time alignment: the Wavegram advances 320 samples per frame, the log-mel ``hop_size``.
    Upstream concatenates them directly, which only works when ``hop_size == 320`` and the clip
    length rounds the same way in both branches. Here the Wavegram time axis is matched to the
    log-mel frames (see :func:`match_frames`): repeated (or averaged) by the integer frame-rate
    ratio, e.g. x2 at 16 kHz / hop 160, then cropped or padded with its last frame. At
    upstream's settings this is the identity, so published checkpoints give upstream's outputs.
    """

    def __init__(
        self,
        sample_rate: int,
        window_size: int,
        hop_size: int,
        mel_bins: int,
        fmin: float,
        fmax: float,
        classes_num: int,
        *,
        embedding_size: int = 2048,
        wave_conv2d: bool = False,
        **frontend_options: Any,
    ):
        if mel_bins % 2:
            raise ValueError(f"Wavegram-Logmel needs an even mel_bins (conv_block1 halves it), got {mel_bins}")
        channels = CNN14_CHANNELS
        input_channels = (1, channels[0] + 64, *channels[1:-1])
        super().__init__(
            sample_rate,
            window_size,
            hop_size,
            mel_bins,
            fmin,
            fmax,
            classes_num,
            channels=channels,
            pool_sizes=CNN14_POOLS,
            embedding_size=embedding_size,
            block_input_channels=input_channels,
            **frontend_options,
        )
        self.build_wavegram(freq_bins=mel_bins // 2, wave_conv2d=wave_conv2d)
        self.frame_ratio = frame_rate_ratio(hop_size)

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        wave_features = self.wavegram(waveform)
        x = self.logmel(waveform, mixup_lambda)
        wave_features = mix_if_training(wave_features, mixup_lambda, self.training)
        x = self.conv_block1(x, pool_size=self.pool_sizes[0], pool_type="avg")
        x = torch.cat((x, match_frames(wave_features, x.shape[2], *self.frame_ratio)), dim=1)
        x = F.dropout(x, p=0.2, training=self.training)
        x = self.run_blocks(x, 2, self.num_blocks)
        return self.clip_outputs(pool_freq_then_time(x))


class WavegramCnn(WavegramMixin, ConvStackMixin, ClipHeadMixin, nn.Module):
    """Wavegram-Cnn14: the Wavegram replaces ``conv_block1``'s output.

    ``conv_block1`` and ``bn0`` are built but unused, exactly as upstream, so that its
    checkpoints load strictly. There is no mel axis: ``mel_bins``, ``window_size``, ``fmin`` and
    ``fmax`` are accepted for the uniform signature and ignored.
    """

    def __init__(
        self,
        sample_rate: int,
        window_size: int,
        hop_size: int,
        mel_bins: int,
        fmin: float,
        fmax: float,
        classes_num: int,
        *,
        embedding_size: int = 2048,
        wave_conv2d: bool = False,
    ):
        super().__init__()
        self.build_wavegram(freq_bins=32, wave_conv2d=wave_conv2d)
        self.bn0 = nn.BatchNorm2d(64)  # unused; present in upstream checkpoints
        init_bn(self.bn0)
        self.build_conv_stack(CNN14_CHANNELS, CNN14_POOLS)
        self.build_clip_head(CNN14_CHANNELS[-1], embedding_size, classes_num)

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = mix_if_training(self.wavegram(waveform), mixup_lambda, self.training)
        x = F.dropout(x, p=0.2, training=self.training)
        x = self.run_blocks(x, 2, self.num_blocks)
        return self.clip_outputs(pool_freq_then_time(x))


def match_frames(features: torch.Tensor, frames: int, repeat: int = 1, average: int = 1) -> torch.Tensor:
    """Resize the time axis (dim 2) of ``features`` to ``frames``, keeping frames aligned.

    The frame-rate ratio of the two branches (a property of ``hop_size``, see
    :func:`frame_rate_ratio`) is undone first by repeating (``repeat`` > 1: a faster log-mel) or
    averaging (``average`` > 1: a slower one) Wavegram frames; the remaining difference, from how
    each branch rounds the clip length, is cropped or padded with the last frame. Written with
    tensor operations only (no Python branch on a length), so a traced export keeps a dynamic
    time axis.
    """
    if repeat > 1:
        features = features.repeat_interleave(repeat, dim=2)
    elif average > 1:
        features = F.avg_pool2d(features, kernel_size=(average, 1), ceil_mode=True)
    last = features.shape[2] - 1
    positions = torch.arange(frames, device=features.device).clamp(max=last)
    return features.index_select(2, positions)


def frame_rate_ratio(hop_size: int) -> tuple[int, int]:
    """``(repeat, average)``: how many log-mel frames one Wavegram frame spans (hop 160: (2, 1)), or
    the reverse (hop 640: (1, 2)); (1, 1) at upstream's hop of 320 samples."""
    faster, slower = WAVEGRAM_HOP / hop_size, hop_size / WAVEGRAM_HOP
    return (round(faster) if faster >= 1.5 else 1), (round(slower) if slower >= 1.5 else 1)


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "Wavegram_Logmel_Cnn14": WavegramLogmelCnn,
    # 128 mel bins: the Wavegram gets 64 bins (pre_block3 emits 256 channels).
    "Wavegram_Logmel128_Cnn14": WavegramLogmelCnn,
    "Wavegram_Cnn14": WavegramCnn,
}
