"""Training augmentation, all of it: the augment config (one object), mixup, SpecAugment settings, waveform augmentations.

:class:`AugmentOptions` is the ``augment`` config group (``conf/augment/*.yaml``; the config schema
uses this class as is) and what :class:`~panns_lightning.training.module.TaggingModule` takes
whole. Adding an augmentation means a field here, its check in :meth:`AugmentOptions.check`, what
it does (below) and its key in the presets; nothing else.

- **Mixup** (PANNs): λ ~ Beta(α, α) per pair, :func:`sample_mixup_lambda` in the pairwise layout
  ``[λ0, 1-λ0, λ1, 1-λ1, ...]``; a batch of B clips yields B // 2 mixed examples, so
  ``data.batch_size`` is the number of clips read per step (2x the mixed examples, as PANNs reads
  twice its batch when mixing). Where: ``logmel`` inside the model after bn0 and SpecAugment
  (upstream), or ``waveform`` before it. Both use the models' pairwise arithmetic
  (``models.do_mixup``: row ``i`` = ``x[2i]·λ[2i] + x[2i+1]·λ[2i+1]``), so targets are mixed the same
  way whichever side the mixing happens on.
- **SpecAugment** lives in the model's front end (train mode only): :meth:`SpecAugmentOptions.model_settings`
  are the model-config keys it sets; "off" is zero stripes.
- **Waveform gain and time shift** (:class:`WaveformAugment`) run inside ``training_step`` on the
  device batch, so they cost no data-loader time and never touch validation, test or prediction.

Random draws come from torch's global RNG, which ``L.seed_everything(cfg.seed)`` seeds per rank: a
run is reproducible without a generator being threaded through the code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from panns_lightning.models.frontend import PAPER_FREQ_STRIPES_NUM, PAPER_TIME_DROP_WIDTH, PAPER_TIME_STRIPES_NUM

MIXUP_SITES = ("logmel", "waveform")


@dataclass
class MixupOptions:
    enabled: bool = True
    alpha: float = 1.0
    # Where pairs are mixed: "logmel" inside the model after bn0 and SpecAugment (PANNs), or
    # "waveform" before the model. (Not named "on": YAML reads an unquoted `on:` key as true.)
    at: str = "logmel"


@dataclass
class SpecAugmentOptions:
    enabled: bool = True
    time_drop_width: int = PAPER_TIME_DROP_WIDTH
    time_stripes_num: int = PAPER_TIME_STRIPES_NUM
    # None: the model's mel_bins // 8 (upstream's per-model width).
    freq_drop_width: Optional[int] = None
    freq_stripes_num: int = PAPER_FREQ_STRIPES_NUM

    def model_settings(self) -> dict[str, int]:
        """The model-config keys that set SpecAugment in the front end; disabled is zero stripes."""
        settings = {
            "time_drop_width": int(self.time_drop_width),
            "time_stripes_num": int(self.time_stripes_num) if self.enabled else 0,
            "freq_stripes_num": int(self.freq_stripes_num) if self.enabled else 0,
        }
        if self.freq_drop_width is not None:  # else the model's own mel_bins // 8, as upstream
            settings["freq_drop_width"] = int(self.freq_drop_width)
        return settings


@dataclass
class GainOptions:
    enabled: bool = False
    min_db: float = -6.0
    max_db: float = 6.0


@dataclass
class TimeShiftOptions:
    enabled: bool = False
    # Circular shift of up to ± this many seconds per clip.
    max_seconds: float = 0.5


@dataclass
class WaveformOptions:
    gain: GainOptions = field(default_factory=GainOptions)
    time_shift: TimeShiftOptions = field(default_factory=TimeShiftOptions)


@dataclass
class AugmentOptions:
    """The ``augment`` group: mixup, SpecAugment and the waveform augmentations (not frozen: OmegaConf reads it)."""

    mixup: MixupOptions = field(default_factory=MixupOptions)
    specaugment: SpecAugmentOptions = field(default_factory=SpecAugmentOptions)
    waveform: WaveformOptions = field(default_factory=WaveformOptions)

    def check(self) -> AugmentOptions:
        """Value checks a type cannot express; ``ValueError`` names the key (``augment.…``). Returns self."""
        mixup = self.mixup
        if mixup.at not in MIXUP_SITES:
            raise ValueError(f"augment.mixup.at must be one of {list(MIXUP_SITES)}, got {mixup.at!r}")
        if mixup.enabled and mixup.alpha <= 0:
            raise ValueError(f"augment.mixup.alpha must be > 0 when mixup is enabled, got {mixup.alpha}")
        gain = self.waveform.gain
        if gain.enabled and gain.min_db > gain.max_db:
            raise ValueError(f"augment.waveform.gain: min_db={gain.min_db} is above max_db={gain.max_db}")
        shift = self.waveform.time_shift
        if shift.enabled and shift.max_seconds < 0:
            raise ValueError(f"augment.waveform.time_shift.max_seconds must be >= 0, got {shift.max_seconds}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts (what a checkpoint's hyper-parameters can hold under ``weights_only``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentOptions:
        """From :meth:`to_dict`'s layout (a checkpoint, a resolved config); missing keys keep their defaults."""
        waveform = values.get("waveform") or {}
        return cls(
            mixup=MixupOptions(**(values.get("mixup") or {})),
            specaugment=SpecAugmentOptions(**(values.get("specaugment") or {})),
            waveform=WaveformOptions(
                gain=GainOptions(**(waveform.get("gain") or {})),
                time_shift=TimeShiftOptions(**(waveform.get("time_shift") or {})),
            ),
        )

    def waveform_augment(self, sample_rate: int) -> WaveformAugment:
        """The waveform augmentations this config switches on, for clips at ``sample_rate``."""
        gain, shift = self.waveform.gain, self.waveform.time_shift
        return WaveformAugment(
            gain_db=(float(gain.min_db), float(gain.max_db)) if gain.enabled else None,
            max_shift_samples=int(round(float(shift.max_seconds) * int(sample_rate))) if shift.enabled else 0,
        )


def sample_mixup_lambda(batch_size: int, alpha: float) -> torch.Tensor:
    """Draw one λ ~ Beta(α, α) per pair (torch's global RNG, seeded by the run's seed) as [λ, 1-λ, ...]."""
    if batch_size < 2 or batch_size % 2:
        raise ValueError(f"mixup needs an even batch of at least 2 clips, got {batch_size}")
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    # validate_args=False: the arguments were checked above, and validation reads tensor values.
    lam = torch.distributions.Beta(float(alpha), float(alpha), validate_args=False).sample((batch_size // 2,))
    return torch.stack([lam, 1.0 - lam], dim=1).reshape(-1)


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
