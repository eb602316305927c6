"""CNNs on the raw waveform: LeeNet11/24 (Lee et al. 2017) and DaiNet19 (Dai et al. 2017).

These take no spectrogram: the front-end arguments are accepted for the uniform signature and
ignored. Mixup mixes the waveforms themselves.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import LeeNetConvBlock, init_bn, init_layer
from .heads import ClipHeadMixin, max_plus_mean_over_time
from .mixup import mix_if_training
from .residual import DaiNetResBlock

LEENET11_CHANNELS = (64, 64, 64, 128, 128, 128, 128, 128, 256)
LEENET24_CHANNELS = (64, 96, 128, 128, 256, 256, 512, 512, 1024)


class LeeNet(ClipHeadMixin, nn.Module):
    """``conv_block1`` (stride 3) then blocks 2..9 with max-pool 3 → head.

    LeeNet11: one conv per block, no dropout. LeeNet24: two convs per block, dropout 0.1 between
    blocks and no pooling after the last.
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
        channels: Sequence[int] = LEENET11_CHANNELS,
        layers_per_block: int = 1,
        block_dropout: float = 0.0,
        pool_last_block: bool = True,
        embedding_size: int = 512,
    ):
        super().__init__()
        self.block_dropout = block_dropout
        self.pools = [1] + [3] * (len(channels) - 2) + [3 if pool_last_block else 1]
        in_channels = 1
        for index, out_channels in enumerate(channels, 1):
            stride = 3 if index == 1 else 1
            block = LeeNetConvBlock(in_channels, out_channels, 3, stride, layers_per_block)
            setattr(self, f"conv_block{index}", block)
            in_channels = out_channels
        self.build_clip_head(channels[-1], embedding_size, classes_num)

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = mix_if_training(waveform[:, None, :], mixup_lambda, self.training)
        for index, pool_size in enumerate(self.pools, 1):
            x = getattr(self, f"conv_block{index}")(x, pool_size=pool_size)
            if self.block_dropout and index < len(self.pools):
                x = F.dropout(x, p=self.block_dropout, training=self.training)
        return self.clip_outputs(max_plus_mean_over_time(x))


class DaiNet(ClipHeadMixin, nn.Module):
    """``conv0`` (k80, stride 4) + ``bn0`` → four residual blocks with max-pool 4 between → head."""

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
        channels: Sequence[int] = (64, 128, 256, 512),
        embedding_size: int = 512,
    ):
        super().__init__()
        self.conv0 = nn.Conv1d(1, 64, kernel_size=80, stride=4, padding=0, bias=False)
        self.bn0 = nn.BatchNorm1d(64)
        init_layer(self.conv0)
        init_bn(self.bn0)
        in_channels = 64
        for index, out_channels in enumerate(channels, 1):
            setattr(self, f"conv_block{index}", DaiNetResBlock(in_channels, out_channels, 3))
            in_channels = out_channels
        self.num_blocks = len(channels)
        self.build_clip_head(channels[-1], embedding_size, classes_num)

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = mix_if_training(waveform[:, None, :], mixup_lambda, self.training)
        x = self.bn0(self.conv0(x))
        for index in range(1, self.num_blocks + 1):
            x = getattr(self, f"conv_block{index}")(x)
            if index < self.num_blocks:
                x = F.max_pool1d(x, kernel_size=4)
        return self.clip_outputs(max_plus_mean_over_time(x))


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "LeeNet11": LeeNet,
    "LeeNet24": partial(
        LeeNet,
        channels=LEENET24_CHANNELS,
        layers_per_block=2,
        block_dropout=0.1,
        pool_last_block=False,
        embedding_size=1024,
    ),
    "DaiNet19": DaiNet,
}
