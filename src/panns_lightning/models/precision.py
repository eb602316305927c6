"""Regions of a model that keep fp32 under autocast.

bf16 autocast speeds up the convolutions, but two places lose what fp32 keeps: the last layer
and its sigmoid (a probability rounds to exactly 0 or 1 and its gradient vanishes) and the
front end's power spectrum and logarithm (an 8-bit mantissa on values spanning ~100 dB).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

AUTOCAST_DEVICES = ("cpu", "cuda", "xpu")


@contextlib.contextmanager
def full_precision(like: torch.Tensor) -> Iterator[None]:
    """Autocast off for the enclosed ops on ``like``'s device type (a no-op when autocast is off)."""
    device_type = like.device.type
    if device_type in AUTOCAST_DEVICES:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:  # e.g. "meta": no autocast exists there
        yield
