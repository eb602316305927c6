"""Pairwise mixup shared by the models (on features) and the training code (on targets).

Keeping one implementation guarantees that inputs and targets are mixed with identical
arithmetic: row ``i`` of the output is ``x[2i] * lam[2i] + x[2i+1] * lam[2i+1]``.
"""

from __future__ import annotations

import torch


def do_mixup(x: torch.Tensor, mixup_lambda: torch.Tensor) -> torch.Tensor:
    """Mix even rows of ``x`` with odd rows, weighted by ``mixup_lambda``.

    Args:
        x: ``[B, ...]`` with ``B`` even (pairs are rows ``(0, 1), (2, 3), ...``).
        mixup_lambda: ``[B]`` per-row weights; upstream PANNs passes ``(lam, 1 - lam, ...)``.

    Returns:
        ``[B // 2, ...]``.
    """
    batch = x.shape[0]
    if mixup_lambda.dim() != 1 or mixup_lambda.shape[0] != batch:
        raise ValueError(
            f"mixup_lambda must have shape [{batch}] to match x of shape {tuple(x.shape)}, "
            f"got {tuple(mixup_lambda.shape)}"
        )
    if batch % 2 != 0:
        raise ValueError(f"mixup pairs rows (0,1), (2,3), ...; batch size must be even, got {batch}")
    weights = mixup_lambda.to(dtype=x.dtype).reshape(batch, *([1] * (x.dim() - 1)))
    return x[0::2] * weights[0::2] + x[1::2] * weights[1::2]


def mix_if_training(x: torch.Tensor, mixup_lambda: torch.Tensor | None, training: bool) -> torch.Tensor:
    """Apply :func:`do_mixup` in training mode when weights are given; evaluation never mixes."""
    if training and mixup_lambda is not None:
        return do_mixup(x, mixup_lambda)
    return x
