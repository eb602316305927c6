"""Output heads: global pooling, the clip-level tagging head, and the SED (framewise) helpers.

Attribute names (``fc1``, ``fc_audioset``, ``att_block.att`` ...) follow upstream checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import init_bn, init_layer
from .precision import full_precision


def max_plus_mean_over_time(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` → ``[B, C]``: upstream sums max- and mean-pooling over time."""
    return x.max(dim=2).values + x.mean(dim=2)


def pool_freq_then_time(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, F]`` → ``[B, C]``: mean over frequency, then max + mean over time."""
    return max_plus_mean_over_time(x.mean(dim=3))


def linear_layer(in_features: int, out_features: int) -> nn.Linear:
    """A biased ``nn.Linear`` with upstream's Xavier init."""
    layer = nn.Linear(in_features, out_features, bias=True)
    init_layer(layer)
    return layer


def classify_fp32(layer: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Run the last layer in fp32 even under autocast: logits (and the sigmoid and loss after
    them) keep fp32's precision, so a confident class still gets its gradient.

    In bf16 a sigmoid rounds to exactly 1.0 (or 0.0) once |logit| passes about 7, and the BCE
    gradient through it vanishes; upstream trained in fp32 and never lost it.
    """
    with full_precision(features):
        return layer(features.float())


class ClipHeadMixin:
    """``fc1`` (embedding) + ``fc_audioset`` (sigmoid tagger) on pooled ``[B, C]`` features."""

    fc1: nn.Linear
    fc_audioset: nn.Linear
    training: bool
    #: The classifier reads the embedding after its dropout (upstream's transfer models, whose
    #: new head sits on the returned embedding) instead of before it (upstream's AudioSet tagger).
    #: Only training differs: dropout is off in eval mode.
    classify_dropped_embedding: bool = False

    def build_clip_head(self, in_features: int, embedding_size: int, classes_num: int) -> None:
        self.fc1 = linear_layer(in_features, embedding_size)
        self.fc_audioset = linear_layer(embedding_size, classes_num)

    def clip_outputs(self, features: torch.Tensor, input_dropout: float = 0.5) -> dict[str, torch.Tensor]:
        """Return ``clipwise_output`` and ``embedding`` as upstream computes them, plus ``logits``.

        Upstream applies the last dropout to the returned embedding only: its AudioSet classifier
        reads the undropped ``fc1`` activations (kept, so pretraining matches the paper's recipe);
        see :attr:`classify_dropped_embedding` for fine-tuning. ``logits`` (fp32,
        ``clipwise_output = sigmoid(logits)``) are what the training loss reads.
        """
        x = F.dropout(features, p=input_dropout, training=self.training)
        x = F.relu(self.fc1(x))
        embedding = F.dropout(x, p=0.5, training=self.training)
        logits = classify_fp32(self.fc_audioset, embedding if self.classify_dropped_embedding else x)
        return {"clipwise_output": torch.sigmoid(logits), "embedding": embedding, "logits": logits}


class AttBlock(nn.Module):
    """Attention pooling over time for ``Cnn14_DecisionLevelAtt``.

    ``bn_att`` is unused in the forward pass, as upstream, but kept so checkpoints load.
    """

    def __init__(self, in_channels: int, out_channels: int, activation: str = "sigmoid"):
        super().__init__()
        if activation not in ("linear", "sigmoid"):
            raise ValueError(f"activation must be 'linear' or 'sigmoid', got {activation!r}")
        self.activation = activation
        self.att = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=True)
        self.cla = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=True)
        self.bn_att = nn.BatchNorm1d(out_channels)
        init_layer(self.att)
        init_layer(self.cla)
        init_bn(self.bn_att)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, C, T]`` → (clipwise ``[B, K]``, attention ``[B, K, T]``, segmentwise ``[B, K, T]``).

        The last layer: fp32 under autocast, like :func:`classify_fp32`.
        """
        with full_precision(x):
            x = x.float()
            attention = torch.softmax(torch.clamp(self.att(x), -10, 10), dim=-1)
            segmentwise = self.cla(x)
            if self.activation == "sigmoid":
                segmentwise = torch.sigmoid(segmentwise)
            return (attention * segmentwise).sum(dim=2), attention, segmentwise


def segments_to_frames(segmentwise: torch.Tensor, ratio: int, frames_num: int) -> torch.Tensor:
    """Upsample ``[B, segments, K]`` to ``[B, frames_num, K]`` as upstream does.

    Each segment is repeated ``ratio`` times (the CNN's time downsampling); the frames that the
    pooling floor dropped at the end are filled with the last segment's values.
    """
    frames = segmentwise.repeat_interleave(ratio, dim=1)
    missing = frames_num - frames.shape[1]
    if missing > 0:
        frames = torch.cat([frames, frames[:, -1:, :].expand(-1, missing, -1)], dim=1)
    return frames[:, :frames_num, :]
