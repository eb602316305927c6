"""The residual block family: 2-D basic/bottleneck blocks (ResNet22/38/54), the dilated 1-D
basic block (Res1dNet31/51), DaiNet's 1-D block, and one trunk builder for the layered nets.

Key layout follows upstream checkpoints: ``layerN.M.conv1.weight`` and a ``downsample``
``nn.Sequential`` that starts with an (unparameterised) average pool when the block strides,
so its conv/BN sit at ``downsample.1`` / ``downsample.2``, otherwise at ``downsample.0`` / ``.1``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import init_bn, init_layer


class BasicResidualBlock(nn.Module):
    """Two convs with an identity (or projected) shortcut; the stride is applied by pooling
    the input first, as upstream does, instead of a strided conv.

    ``dims=2``: 3x3 convs, 2x2 average pool (ResNet22/38). ``dims=1``: kernel-3 convs with
    dilation 1 then 2 and a max pool of ``stride`` (Res1dNet31/51).
    """

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dims: Literal[1, 2] = 2,
    ):
        super().__init__()
        self.stride = stride
        self.dims = dims
        if dims == 2:
            self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(planes), nn.BatchNorm2d(planes)
        else:
            self.conv1 = nn.Conv1d(in_planes, planes, kernel_size=3, padding=1, dilation=1, bias=False)
            self.conv2 = nn.Conv1d(planes, planes, kernel_size=3, padding=2, dilation=2, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm1d(planes), nn.BatchNorm1d(planes)
        self.downsample = downsample
        init_layer(self.conv1)
        init_layer(self.conv2)
        init_bn(self.bn1)
        init_bn(self.bn2)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.stride != 1:
            if self.dims == 2:
                out = F.avg_pool2d(out, kernel_size=(2, 2))
            else:
                out = F.max_pool1d(out, kernel_size=self.stride)
        out = F.relu(self.bn1(self.conv1(out)))
        out = F.dropout(out, p=0.1, training=self.training)
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class BottleneckResidualBlock(nn.Module):
    """1x1 → 3x3 → 1x1 (x4 channels) with a shortcut; ResNet54's block (2-D only)."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        dims: Literal[2] = 2,
    ):
        super().__init__()
        if dims != 2:
            raise ValueError(f"BottleneckResidualBlock is 2-D only, got dims={dims}")
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample
        for conv in (self.conv1, self.conv2, self.conv3):
            init_layer(conv)
        for bn in (self.bn1, self.bn2, self.bn3):
            init_bn(bn)
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool2d(x, kernel_size=(2, 2)) if self.stride == 2 else x
        out = F.relu(self.bn1(self.conv1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.dropout(out, p=0.1, training=self.training)
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNetTrunk(nn.Module):
    """Stacks of residual blocks named ``layer1..N``.

    Args:
        block: :class:`BasicResidualBlock` or :class:`BottleneckResidualBlock`.
        layers: blocks per stage.
        planes: base width per stage (output is ``planes * block.expansion``).
        strides: downsampling of the first block of each stage.
        dims: 2 for spectrogram ResNets, 1 for waveform ResNets.
    """

    def __init__(
        self,
        block: type[BasicResidualBlock] | type[BottleneckResidualBlock],
        layers: Sequence[int],
        planes: Sequence[int],
        strides: Sequence[int],
        dims: Literal[1, 2] = 2,
        in_planes: int = 64,
    ):
        super().__init__()
        if not len(layers) == len(planes) == len(strides):
            raise ValueError(f"layers, planes and strides need one entry per stage: {layers}, {planes}, {strides}")
        self.dims = dims
        self.out_planes = in_planes
        for index, (count, width, stride) in enumerate(zip(layers, planes, strides), 1):
            setattr(self, f"layer{index}", self._make_stage(block, count, width, stride))
        self.num_stages = len(layers)

    def _make_stage(self, block, count: int, planes: int, stride: int) -> nn.Sequential:
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self.out_planes != out_planes:
            if self.dims == 2:
                conv_type, bn_type, pool_type = nn.Conv2d, nn.BatchNorm2d, nn.AvgPool2d
            else:
                conv_type, bn_type, pool_type = nn.Conv1d, nn.BatchNorm1d, nn.AvgPool1d
            conv = conv_type(self.out_planes, out_planes, kernel_size=1, bias=False)
            bn = bn_type(out_planes)
            init_layer(conv)
            init_bn(bn)
            pool = [pool_type(kernel_size=stride)] if stride != 1 else []
            downsample = nn.Sequential(*pool, conv, bn)
        blocks = [block(self.out_planes, planes, stride, downsample, dims=self.dims)]
        self.out_planes = out_planes
        blocks += [block(out_planes, planes, dims=self.dims) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{index}")(x)
        return x


class DaiNetResBlock(nn.Module):
    """DaiNet19's block: four kernel-k 1-D convs with a shortcut (projected when shapes differ).

    ``downsample``/``bn_downsample`` exist in every block, used or not, as in upstream checkpoints.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        for index in range(1, 5):
            conv = nn.Conv1d(
                in_channels if index == 1 else out_channels,
                out_channels,
                kernel_size=kernel_size,
                padding=kernel_size // 2,
                bias=False,
            )
            bn = nn.BatchNorm1d(out_channels)
            init_layer(conv)
            init_bn(bn)
            setattr(self, f"conv{index}", conv)
            setattr(self, f"bn{index}", bn)
        self.downsample = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn_downsample = nn.BatchNorm1d(out_channels)
        init_layer(self.downsample)
        init_bn(self.bn_downsample)
        nn.init.zeros_(self.bn4.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.relu(self.bn3(self.conv3(out)))
        out = self.bn4(self.conv4(out))
        shortcut = x if x.shape == out.shape else self.bn_downsample(self.downsample(x))
        return F.relu(out + shortcut)
