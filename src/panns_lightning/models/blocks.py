"""Convolution blocks shared by the PANNs zoo, with upstream's attribute names and init.

Attribute names (``conv1``, ``bn1``, ...) are part of the checkpoint format: renaming one
breaks loading of the published PANNs weights.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PoolType = Literal["avg", "max", "avg+max"]


def init_layer(layer: nn.Module) -> None:
    """Xavier-uniform weights and zero bias, as upstream initialises every conv/linear."""
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def init_bn(bn: nn.Module) -> None:
    """Identity affine transform (weight 1, bias 0) for a BatchNorm layer."""
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)


def pool2d(x: torch.Tensor, pool_size: tuple[int, int], pool_type: PoolType) -> torch.Tensor:
    """Pool over (time, freq) the way upstream's conv blocks do."""
    if pool_type == "avg":
        return F.avg_pool2d(x, kernel_size=pool_size)
    if pool_type == "max":
        return F.max_pool2d(x, kernel_size=pool_size)
    if pool_type == "avg+max":
        return F.avg_pool2d(x, kernel_size=pool_size) + F.max_pool2d(x, kernel_size=pool_size)
    raise ValueError(f"pool_type must be 'avg', 'max' or 'avg+max', got {pool_type!r}")


class ConvBlock(nn.Module):
    """``layers`` x (conv k x k, no bias → BatchNorm → ReLU), then pooling.

    Cnn10/Cnn14 use two 3x3 layers; Cnn6 uses one 5x5 layer (:class:`ConvBlock5x5`).
    Layers are named ``conv1, bn1, conv2, bn2, ...`` as upstream.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, layers: int = 2):
        super().__init__()
        self.layers = layers
        for index in range(1, layers + 1):
            conv = nn.Conv2d(
                in_channels if index == 1 else out_channels,
                out_channels,
                kernel_size=kernel_size,
                padding=kernel_size // 2,
                bias=False,
            )
            bn = nn.BatchNorm2d(out_channels)
            init_layer(conv)
            init_bn(bn)
            setattr(self, f"conv{index}", conv)
            setattr(self, f"bn{index}", bn)

    def forward(
        self, x: torch.Tensor, pool_size: tuple[int, int] = (2, 2), pool_type: PoolType = "avg"
    ) -> torch.Tensor:
        for index in range(1, self.layers + 1):
            conv = getattr(self, f"conv{index}")
            bn = getattr(self, f"bn{index}")
            x = F.relu(bn(conv(x)))
        return pool2d(x, pool_size, pool_type)


class ConvBlock5x5(ConvBlock):
    """Cnn6's block: a single 5x5 conv layer (``conv1``, ``bn1``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=5, layers=1)


class ConvPreWavBlock(nn.Module):
    """Wavegram 1-D block: conv k3 → conv k3 dilation 2 (each + BN + ReLU) → max-pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size=3, dilation=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.bn2 = nn.BatchNorm1d(out_channels)
        for layer in (self.conv1, self.conv2):
            init_layer(layer)
        for bn in (self.bn1, self.bn2):
            init_bn(bn)

    def forward(self, x: torch.Tensor, pool_size: int) -> torch.Tensor:
        """``[B, C, T]`` (upstream's layout) or ``[B, C, 1, T]`` (see :func:`conv1d_as_2d`)."""
        if x.dim() == 4:
            x = F.relu(batch_norm_any_rank(self.bn1, conv1d_as_2d(self.conv1, x)))
            x = F.relu(batch_norm_any_rank(self.bn2, conv1d_as_2d(self.conv2, x)))
            return F.max_pool2d(x, kernel_size=(1, pool_size))
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool1d(x, kernel_size=pool_size)


def conv1d_as_2d(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Apply a ``Conv1d`` to ``[B, C, 1, T]`` as the equivalent 2-D convolution (kernel 1 x k).

    Same weights, same result; the 4-D form can be laid out channels-last, which 3-D tensors
    cannot, so a long 1-D signal with many channels gets the NHWC kernels the 2-D trunk uses.
    """
    return F.conv2d(
        x,
        conv.weight.unsqueeze(2),
        conv.bias,
        stride=(1, conv.stride[0]),
        padding=(0, conv.padding[0]),
        dilation=(1, conv.dilation[0]),
        groups=conv.groups,
    )


def batch_norm_any_rank(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """What ``bn(x)`` computes (running statistics and counter updated alike), for any input rank.

    ``BatchNorm1d`` refuses 4-D input; the arithmetic per channel (dim 1) is the same.
    """
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        bn.running_mean if not bn.training or bn.track_running_stats else None,
        bn.running_var if not bn.training or bn.track_running_stats else None,
        bn.weight,
        bn.bias,
        use_batch_stats,
        momentum,
        bn.eps,
    )


class LeeNetConvBlock(nn.Module):
    """LeeNet 1-D block: ``layers`` x (conv k, first one strided → BN → ReLU), padded max-pool.

    One layer is LeeNet11's block, two layers LeeNet24's (upstream ``LeeNetConvBlock2``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, layers: int = 1):
        super().__init__()
        self.layers = layers
        for index in range(1, layers + 1):
            conv = nn.Conv1d(
                in_channels if index == 1 else out_channels,
                out_channels,
                kernel_size=kernel_size,
                stride=stride if index == 1 else 1,
                padding=kernel_size // 2,
                bias=False,
            )
            bn = nn.BatchNorm1d(out_channels)
            init_layer(conv)
            init_bn(bn)
            setattr(self, f"conv{index}", conv)
            setattr(self, f"bn{index}", bn)

    def forward(self, x: torch.Tensor, pool_size: int = 1) -> torch.Tensor:
        for index in range(1, self.layers + 1):
            x = F.relu(getattr(self, f"bn{index}")(getattr(self, f"conv{index}")(x)))
        if pool_size != 1:
            x = F.max_pool1d(x, kernel_size=pool_size, padding=pool_size // 2)
        return x
