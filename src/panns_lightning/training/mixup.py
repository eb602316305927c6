"""Mixup coefficients in PANNs' pairwise layout.

The model mixes rows in pairs (``x[0::2]·λ[0::2] + x[1::2]·λ[1::2]``), so the lambdas come as
``[λ0, 1-λ0, λ1, 1-λ1, ...]`` and a batch of B clips yields B // 2 mixed examples. PANNs
compensates by reading twice the batch when mixup is on; ``data.batch_size`` here is the
number of clips read per step, so set it to 2× the wanted number of mixed examples.
"""

from __future__ import annotations

import torch

from panns_lightning.models.mixup import do_mixup

__all__ = ["sample_mixup_lambda", "do_mixup"]


def sample_mixup_lambda(batch_size: int, alpha: float) -> torch.Tensor:
    """Draw one λ ~ Beta(α, α) per pair (torch's global RNG, seeded by the run's seed) as [λ, 1-λ, ...]."""
    if batch_size < 2 or batch_size % 2:
        raise ValueError(f"mixup needs an even batch of at least 2 clips, got {batch_size}")
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    # validate_args=False: the arguments were checked above, and validation reads tensor values.
    lam = torch.distributions.Beta(float(alpha), float(alpha), validate_args=False).sample((batch_size // 2,))
    return torch.stack([lam, 1.0 - lam], dim=1).reshape(-1)
