"""The plain CNN family on log-mel input: Cnn6, Cnn10, Cnn14 and its variants, and the
Cnn14 decision-level (sound event detection) models.

One class, :class:`Cnn`, covers every clip-level variant; :class:`CnnDecisionLevel` swaps the
head for framewise outputs. The zoo names map to constructor arguments in :data:`VARIANTS`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBlock, ConvBlock5x5
from .frontend import LogmelFrontEndMixin
from .heads import AttBlock, ClipHeadMixin, classify_fp32, linear_layer, pool_freq_then_time, segments_to_frames

CNN14_CHANNELS = (64, 128, 256, 512, 1024, 2048)
CNN10_CHANNELS = (64, 128, 256, 512)
# Cnn14's sixth block does not pool: five 2x2 poolings already reduce 64 mel bins to 2.
CNN14_POOLS = ((2, 2),) * 5 + ((1, 1),)
CNN10_POOLS = ((2, 2),) * 4
CONV_BLOCKS: dict[str, Callable[[int, int], nn.Module]] = {"3x3": ConvBlock, "5x5": ConvBlock5x5}


class ConvStackMixin:
    """``conv_block1..N``, each run with its own pooling and followed by dropout 0.2."""

    pool_sizes: tuple[tuple[int, int], ...]
    training: bool

    def build_conv_stack(
        self,
        channels: Sequence[int],
        pool_sizes: Sequence[tuple[int, int]],
        block: Literal["3x3", "5x5"] = "3x3",
        input_channels: Sequence[int] | None = None,
    ) -> None:
        """Register ``conv_block{i}``; ``input_channels`` defaults to ``(1, *channels[:-1])``."""
        if len(channels) != len(pool_sizes):
            raise ValueError(f"channels ({len(channels)} blocks) and pool_sizes ({len(pool_sizes)}) must match")
        if block not in CONV_BLOCKS:
            raise ValueError(f"block must be one of {sorted(CONV_BLOCKS)}, got {block!r}")
        if input_channels is None:
            input_channels = (1, *channels[:-1])
        self.pool_sizes = tuple((int(time), int(freq)) for time, freq in pool_sizes)
        for index, (in_channels, out_channels) in enumerate(zip(input_channels, channels), 1):
            setattr(self, f"conv_block{index}", CONV_BLOCKS[block](in_channels, out_channels))

    @property
    def num_blocks(self) -> int:
        return len(self.pool_sizes)

    def run_blocks(self, x: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Apply ``conv_block{first..last}`` (1-based, inclusive), each followed by dropout 0.2."""
        for index in range(first, last + 1):
            block = getattr(self, f"conv_block{index}")
            x = block(x, pool_size=self.pool_sizes[index - 1], pool_type="avg")
            x = F.dropout(x, p=0.2, training=self.training)
        return x


class Cnn(LogmelFrontEndMixin, ConvStackMixin, ClipHeadMixin, nn.Module):
    """Log-mel front end → ``conv_block1..N`` → clip head (``fc1``, ``fc_audioset``).

    Args:
        channels: output channels of ``conv_block1..N``.
        pool_sizes: (time, freq) average-pool size after each block.
        block: ``"3x3"`` (two 3x3 layers, Cnn10/14) or ``"5x5"`` (one 5x5 layer, Cnn6).
        embedding_size: width of ``fc1`` (the returned embedding).
        block_input_channels: input channels per block when a branch is concatenated in
            (Wavegram-Logmel); defaults to the previous block's output.
        frontend_options: SpecAugment stripes (``time_drop_width``, ``time_stripes_num``,
            ``freq_drop_width``, ``freq_stripes_num``; the paper's values by default) and the
            STFT implementation (``stft="conv"`` or ``"fft"``), see ``build_logmel_frontend``.
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
        channels: Sequence[int] = CNN14_CHANNELS,
        pool_sizes: Sequence[tuple[int, int]] = CNN14_POOLS,
        block: Literal["3x3", "5x5"] = "3x3",
        embedding_size: int = 2048,
        block_input_channels: Sequence[int] | None = None,
        **frontend_options: Any,
    ):
        super().__init__()
        self.build_logmel_frontend(sample_rate, window_size, hop_size, mel_bins, fmin, fmax, **frontend_options)
        self.build_conv_stack(channels, pool_sizes, block, block_input_channels)
        self.build_head(channels[-1], embedding_size, classes_num)

    def build_head(self, in_features: int, embedding_size: int, classes_num: int) -> None:
        self.build_clip_head(in_features, embedding_size, classes_num)

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.run_blocks(self.logmel(waveform, mixup_lambda), 1, self.num_blocks)
        return self.clip_outputs(pool_freq_then_time(x))


class CnnDecisionLevel(Cnn):
    """Cnn14 with a per-segment classifier; returns ``framewise_output[B, frames, classes]``.

    ``aggregation`` turns segment probabilities into the clip probability: ``"max"``, ``"avg"``
    or ``"att"`` (attention block ``att_block`` replacing ``fc_audioset``). Framewise output is
    upsampled to the log-mel frame count as upstream (repeat each segment, pad with the last).
    Upstream returns no embedding for these models; here ``embedding`` is the time-average of
    the per-segment ``fc1`` activations, so the output contract holds for every zoo model.
    """

    def __init__(self, *args, aggregation: Literal["max", "avg", "att"] = "max", **kwargs):
        if aggregation not in ("max", "avg", "att"):
            raise ValueError(f"aggregation must be 'max', 'avg' or 'att', got {aggregation!r}")
        self.aggregation = aggregation  # read by build_head, which Cnn.__init__ calls
        super().__init__(*args, **kwargs)
        self.time_downsampling = math.prod(size[0] for size in self.pool_sizes)

    def build_head(self, in_features: int, embedding_size: int, classes_num: int) -> None:
        self.fc1 = linear_layer(in_features, embedding_size)
        if self.aggregation == "att":
            self.att_block = AttBlock(embedding_size, classes_num, activation="sigmoid")
        else:
            self.fc_audioset = linear_layer(embedding_size, classes_num)

    def forward(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.logmel(waveform, mixup_lambda)
        frames_num = x.shape[2]
        x = self.run_blocks(x, 1, self.num_blocks).mean(dim=3)
        # Smooth over neighbouring segments (max + mean, window 3) before classifying each.
        x = F.max_pool1d(x, kernel_size=3, stride=1, padding=1) + F.avg_pool1d(x, kernel_size=3, stride=1, padding=1)
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x.transpose(1, 2)))
        x = F.dropout(x, p=0.5, training=self.training)  # [B, segments, embedding]
        if self.aggregation == "att":
            clipwise, _, segmentwise = self.att_block(x.transpose(1, 2))
            segmentwise = segmentwise.transpose(1, 2)
        else:
            segment_logits = classify_fp32(self.fc_audioset, x)
            segmentwise = torch.sigmoid(segment_logits)
            clipwise = segmentwise.max(dim=1).values if self.aggregation == "max" else segmentwise.mean(dim=1)
        outputs = {
            "clipwise_output": clipwise,
            "framewise_output": segments_to_frames(segmentwise, self.time_downsampling, frames_num),
            "embedding": x.mean(dim=1),
        }
        if self.aggregation == "max":
            # The sigmoid is monotonic: the max of the probabilities is the sigmoid of the max logit.
            outputs["logits"] = segment_logits.max(dim=1).values
        return outputs


_CNN6 = dict(channels=CNN10_CHANNELS, pool_sizes=CNN10_POOLS, block="5x5", embedding_size=512)
_CNN10 = dict(channels=CNN10_CHANNELS, pool_sizes=CNN10_POOLS, embedding_size=512)

#: Zoo name → constructor taking the uniform (sample_rate, ..., classes_num, **extra) signature.
VARIANTS: dict[str, Callable[..., nn.Module]] = {
    "Cnn6": partial(Cnn, **_CNN6),
    "Cnn10": partial(Cnn, **_CNN10),
    "Cnn14": Cnn,
    # Same network as Cnn14; only the front-end settings differ (see FRONTEND_DEFAULTS).
    "Cnn14_16k": Cnn,
    "Cnn14_8k": Cnn,
    "Cnn14_mel32": Cnn,
    "Cnn14_mel128": Cnn,
    "Cnn14_emb512": partial(Cnn, embedding_size=512),
    "Cnn14_emb128": partial(Cnn, embedding_size=128),
    "Cnn14_emb32": partial(Cnn, embedding_size=32),
    "Cnn14_DecisionLevelMax": partial(CnnDecisionLevel, aggregation="max"),
    "Cnn14_DecisionLevelAvg": partial(CnnDecisionLevel, aggregation="avg"),
    "Cnn14_DecisionLevelAtt": partial(CnnDecisionLevel, aggregation="att"),
}
