"""Non-finite network outputs are an error, never a number to print, score or verify against.

A checkpoint whose weights hold NaN (or a front end fed settings that overflow) gives NaN
probabilities, and NaN slips through comparisons: ``max(worst, nan)`` keeps ``worst``, so an
all-NaN export passed its own verification, ``panns-tag`` printed ``nan`` and metrics were
computed over it. :func:`require_finite` is the one check every consumer of outputs calls.
"""

from __future__ import annotations

import numpy as np
import torch


class NonFiniteOutputError(ValueError):
    """A network output holds NaN or infinite values; the message says which output and how many."""


def require_finite(values: torch.Tensor | np.ndarray, what: str) -> None:
    """Raise :class:`NonFiniteOutputError` naming ``what`` when ``values`` holds NaN or ±inf."""
    if isinstance(values, torch.Tensor):
        bad = int((~torch.isfinite(values.detach())).sum())
        nan = int(torch.isnan(values.detach()).sum()) if bad else 0
    else:
        array = np.asarray(values)
        if not np.issubdtype(array.dtype, np.inexact):
            return
        bad = int((~np.isfinite(array)).sum())
        nan = int(np.isnan(array).sum()) if bad else 0
    if bad:
        total = int(values.numel()) if isinstance(values, torch.Tensor) else int(np.asarray(values).size)
        kinds = " and ".join(kind for kind, count in (("NaN", nan), ("infinite", bad - nan)) if count)
        raise NonFiniteOutputError(
            f"{what} holds {kinds} values ({bad} of {total}): the weights or the input are not finite "
            "(a checkpoint saved after training diverged?)"
        )
