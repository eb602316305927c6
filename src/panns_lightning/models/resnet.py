"""ResNet22/38/54 on log-mel input and Res1dNet31/51 on the raw waveform."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBlock, init_bn, init_layer
from .frontend import LogmelFrontEndMixin
from .heads import ClipHeadMixin, max_plus_mean_over_time, pool_freq_then_time
from .mixup import mix_if_training
from .residual import BasicResidualBlock, BottleneckResidualBlock, ResNetTrunk


class ResNet(LogmelFrontEndMixin, ClipHeadMixin, nn.Module):
    """Log-mel → ``conv_block1`` → ``resnet`` (4 stages) → 2x2 pool → ``conv_block_after1`` → head."""

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
        layers: Sequence[int] = (2, 2, 2, 2),
        bottleneck: bool = False,
        embedding_size: int = 2048,
        **frontend_options: Any,
    ):
        super().__init__()
        self.build_logmel_frontend(sample_rate, window_size, hop_size, mel_bins, fmin, fmax, **frontend_options)
        self.conv_block1 = ConvBlock(1, 64)
        block = BottleneckResidualBlock if bottleneck else BasicResidualBlock
        self.resnet = ResNetTrunk(block, layers, planes=(64, 128, 256, 512), strides=(1, 2, 2, 2), dims=2)
        self.conv_block_after1 = ConvBlock(self.resnet.out_planes, 2048)
        self.build_clip_head(2048, embedding_size, classes_num)

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.logmel(waveform, mixup_lambda)
        x = F.dropout(self.conv_block1(x, pool_size=(2, 2), pool_type="avg"), p=0.2, training=self.training)
        x = F.avg_pool2d(self.resnet(x), kernel_size=(2, 2))
        x = F.dropout(x, p=0.2, training=self.training)
        x = self.conv_block_after1(x, pool_size=(1, 1), pool_type="avg")
        x = F.dropout(x, p=0.2, training=self.training)
        return self.clip_outputs(pool_freq_then_time(x))


class Res1dNet(ClipHeadMixin, nn.Module):
    """Raw waveform → ``conv0`` (k11, stride 5) + ``bn0`` → 7-stage dilated 1-D ResNet → head.

    Waveform model: the front-end arguments are accepted for the uniform signature and ignored.
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
        layers: Sequence[int] = (2, 2, 2, 2, 2, 2, 2),
        embedding_size: int = 2048,
    ):
        super().__init__()
        self.conv0 = nn.Conv1d(1, 64, kernel_size=11, stride=5, padding=5, bias=False)
        self.bn0 = nn.BatchNorm1d(64)
        init_layer(self.conv0)
        init_bn(self.bn0)
        self.resnet = ResNetTrunk(
            BasicResidualBlock,
            layers,
            planes=(64, 128, 256, 512, 1024, 1024, 2048),
            strides=(1, 4, 4, 4, 4, 4, 4),
            dims=1,
        )
        self.build_clip_head(2048, embedding_size, classes_num)

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = mix_if_training(waveform[:, None, :], mixup_lambda, self.training)
        x = self.resnet(self.bn0(self.conv0(x)))
        return self.clip_outputs(max_plus_mean_over_time(x))


VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "ResNet22": partial(ResNet, layers=(2, 2, 2, 2)),
    "ResNet38": partial(ResNet, layers=(3, 4, 6, 3)),
    "ResNet54": partial(ResNet, layers=(3, 4, 6, 3), bottleneck=True),
    "Res1dNet31": partial(Res1dNet, layers=(2, 2, 2, 2, 2, 2, 2)),
    "Res1dNet51": partial(Res1dNet, layers=(2, 3, 4, 6, 4, 3, 2)),
}
