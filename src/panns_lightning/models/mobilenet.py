"""MobileNetV1/V2 on log-mel input (paper Sec. 4.4), with upstream's layer positions.

Upstream downsamples with an ``AvgPool2d`` after each depthwise conv instead of striding it;
the pool sits inside the ``nn.Sequential``, so parameter indices (``features.1.2.weight`` ...)
count it. The builders below keep that order.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from .blocks import init_bn, init_layer
from .frontend import LogmelFrontEndMixin
from .heads import ClipHeadMixin, pool_freq_then_time

# MobileNetV1: (out_channels, stride) of each depthwise-separable layer after the stem.
V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))
# MobileNetV2: (expand_ratio t, channels c, repeats n, stride s), as in Sandler et al. 2018.
V2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 2),
    (6, 160, 3, 1),
    (6, 320, 1, 1),
)


def _conv(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)
    init_layer(conv)
    return conv


def _bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    init_bn(bn)
    return bn


def stem(out_channels: int, stride: int, activation: type[nn.Module]) -> nn.Sequential:
    """3x3 conv → pool(stride) → BN → activation."""
    return nn.Sequential(_conv(1, out_channels, 3), nn.AvgPool2d(stride), _bn(out_channels), activation(inplace=True))


def depthwise_separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """MobileNetV1 layer: depthwise 3x3 → pool → BN → ReLU → pointwise 1x1 → BN → ReLU."""
    return nn.Sequential(
        _conv(in_channels, in_channels, 3, groups=in_channels),
        nn.AvgPool2d(stride),
        _bn(in_channels),
        nn.ReLU(inplace=True),
        _conv(in_channels, out_channels, 1),
        _bn(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: (expand 1x1) → depthwise 3x3 + pool → project 1x1, residual if shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        expand = []
        if expand_ratio != 1:
            expand = [_conv(in_channels, hidden, 1), _bn(hidden), nn.ReLU6(inplace=True)]
        self.conv = nn.Sequential(
            *expand,
            _conv(hidden, hidden, 3, groups=hidden),
            nn.AvgPool2d(stride),
            _bn(hidden),
            nn.ReLU6(inplace=True),
            _conv(hidden, out_channels, 1),
            _bn(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNet(LogmelFrontEndMixin, ClipHeadMixin, nn.Module):
    """Log-mel → ``features`` (MobileNetV1 or V2 body) → clip head.

    V2 skips the dropout before ``fc1``, as upstream.
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
        version: int = 1,
        **frontend_options: Any,
    ):
        super().__init__()
        self.build_logmel_frontend(sample_rate, window_size, hop_size, mel_bins, fmin, fmax, **frontend_options)
        if version == 1:
            layers, channels = [stem(32, 2, nn.ReLU)], 32
            for out_channels, stride in V1_LAYERS:
                layers.append(depthwise_separable(channels, out_channels, stride))
                channels = out_channels
            self.head_dropout, feature_width, embedding_size = 0.5, 1024, 1024
        elif version == 2:
            layers, channels = [stem(32, 2, nn.ReLU6)], 32
            for expand_ratio, out_channels, repeats, stride in V2_SETTINGS:
                for repeat in range(repeats):
                    block_stride = stride if repeat == 0 else 1
                    layers.append(InvertedResidual(channels, out_channels, block_stride, expand_ratio))
                    channels = out_channels
            layers.append(nn.Sequential(_conv(channels, 1280, 1), _bn(1280), nn.ReLU6(inplace=True)))
            self.head_dropout, feature_width, embedding_size = 0.0, 1280, 1024
        else:
            raise ValueError(f"version must be 1 or 2, got {version}")
        self.features = nn.Sequential(*layers)
        self.build_clip_head(feature_width, embedding_size, classes_num)

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.features(self.logmel(waveform, mixup_lambda))
        return self.clip_outputs(pool_freq_then_time(x), input_dropout=self.head_dropout)


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "MobileNetV1": partial(MobileNet, version=1),
    "MobileNetV2": partial(MobileNet, version=2),
}
