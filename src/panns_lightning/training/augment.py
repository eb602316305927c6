"""Cheap batch-level waveform augmentations for training: random gain, random time shift, waveform mixup.

They run inside ``TaggingModule.training_step`` on the device batch, so they cost no data-loader
time and never touch validation, test or prediction. Random draws come from torch's global RNG,
which ``L.seed_everything(cfg.seed)`` seeds per rank: a run is reproducible without a generator
being threaded through the code.

Mixup on waveforms uses the same pairwise arithmetic as the log-mel mixup inside the models
(``models.do_mixup``: row ``i`` = ``x[2i]·λ[2i] + x[2i+1]·λ[2i+1]``), so targets are mixed the
same way whichever side the mixing happens on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


MIXUP_SITES = ("logmel", "waveform")


@dataclass(frozen=True)
class WaveformAugment:
    """Per-clip random gain (uniform in dB) and circular time shift, applied to a ``[B, T]`` batch.

    ``gain_db=None`` and ``max_shift_samples=0`` switch the respective augmentation off.
    """

    gain_db: tuple[float, float] | None = None
    max_shift_samples: int = 0

    def __post_init__(self) -> None:
        if self.gain_db is not None and self.gain_db[0] > self.gain_db[1]:
            raise ValueError(f"gain range must be (min_db, max_db) with min <= max, got {self.gain_db}")
        if self.max_shift_samples < 0:
            raise ValueError(f"max_shift_samples must be >= 0, got {self.max_shift_samples}")

    @property
    def enabled(self) -> bool:
        return self.gain_db is not None or self.max_shift_samples > 0

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.gain_db is not None:
            waveform = random_gain(waveform, *self.gain_db)
        if self.max_shift_samples > 0:
            waveform = random_roll(waveform, self.max_shift_samples)
        return waveform


def random_gain(waveform: torch.Tensor, min_db: float, max_db: float) -> torch.Tensor:
    """Scale each clip by ``10 ** (g / 20)`` with ``g ~ U(min_db, max_db)`` (one draw per clip)."""
    gain_db = torch.empty(waveform.shape[0], device=waveform.device).uniform_(float(min_db), float(max_db))
    scale = torch.pow(10.0, gain_db / 20.0).to(waveform.dtype)
    return waveform * scale.reshape(-1, *([1] * (waveform.dim() - 1)))


def random_roll(waveform: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Roll each clip of ``[B, T]`` circularly by its own shift in ``[-max_shift, max_shift]`` samples.

    Circular, not zero-padded: a tagging label holds for the whole clip, so moving the event and
    wrapping the tail keeps both the label and the clip's energy.
    """
    if waveform.dim() != 2:
        raise ValueError(f"random_roll expects [batch, samples], got shape {tuple(waveform.shape)}")
    batch, samples = waveform.shape
    shift = torch.randint(-int(max_shift), int(max_shift) + 1, (batch, 1), device=waveform.device)
    index = (torch.arange(samples, device=waveform.device).unsqueeze(0) - shift) % samples
    return waveform.gather(1, index)
