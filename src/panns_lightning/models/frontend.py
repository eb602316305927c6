"""The PANNs log-mel front end: STFT → log-mel → bn0 → SpecAugment → mixup.

Upstream registers these modules directly on each model (``spectrogram_extractor``,
``logmel_extractor``, ``bn0``, ``spec_augmenter``), so the published checkpoints hold keys such as
``spectrogram_extractor.stft.conv_real.weight`` and ``bn0.running_mean`` at the top level. A
nested ``frontend.`` module would rename them; the mixin below installs the modules on the model
itself instead, so every spectrogram model shares one implementation and keeps upstream's keys.

Two implementations of the same STFT (``stft=``): ``"conv"`` is torchlibrosa's, a 1-D convolution
with 2 x (n_fft/2 + 1) filters of width n_fft (upstream's arithmetic, ~1 G multiply-adds per 10 s
clip at 32 kHz); ``"fft"`` computes the same power spectrogram with ``torch.stft`` (cuFFT on a
GPU, a few tens of MFLOP). Both hold the same parameters, so published checkpoints load strictly
either way; on real audio their log-mels differ by at most ``FFT_LOGMEL_TOLERANCE_DB``. Under
autocast the spectrogram, mel projection and logarithm stay in fp32 (an 8-bit mantissa cannot
hold a power spectrum spanning ~100 dB, and |STFT|² overflows fp16).
"""

from __future__ import annotations

import contextlib
import copy
import functools

import torch
from torch import nn
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from .blocks import init_bn
from .mixup import mix_if_training
from .precision import full_precision

# Upstream's fixed STFT/mel settings (not tunable there either).
STFT_WINDOW = "hann"
STFT_CENTER = True
STFT_PAD_MODE = "reflect"
LOGMEL_REF = 1.0
LOGMEL_AMIN = 1e-10
LOGMEL_TOP_DB = None

STFT_IMPLEMENTATIONS = ("conv", "fft")

# The paper's SpecAugment: 2 time stripes of up to 63 frames, 2 frequency stripes of up to
# mel_bins // 8 - 1 bins. The one home of these numbers: the front end's defaults below,
# training.augment.SpecAugmentOptions and conf/augment/*.yaml (tests/test_one_home.py) take them.
PAPER_TIME_DROP_WIDTH = 64
PAPER_TIME_STRIPES_NUM = 2
PAPER_FREQ_STRIPES_NUM = 2
PAPER_FREQ_DROP_WIDTH_DIVISOR = 8
SPEC_AUGMENT_DEFAULTS: dict[str, int | None] = {
    "time_drop_width": PAPER_TIME_DROP_WIDTH,
    "time_stripes_num": PAPER_TIME_STRIPES_NUM,
    "freq_drop_width": None,  # mel_bins // PAPER_FREQ_DROP_WIDTH_DIVISOR of the model at hand
    "freq_stripes_num": PAPER_FREQ_STRIPES_NUM,
}
# Bounds on a front end's settings (frontend_problems): a config or a checkpoint names them, and
# each becomes an allocation (the conv STFT holds 2 x (n/2 + 1) x n weights: 256 MiB at 8192).
MAX_SAMPLE_RATE = 384_000
MAX_WINDOW_SIZE = 8192

# Largest log-mel difference (dB) between the two STFTs on real audio (tests/test_frontend.py;
# measured 4e-4 dB on a 7 s AudioSet clip, values spanning -80..+19 dB).
FFT_LOGMEL_TOLERANCE_DB = 1e-3


def frontend_problems(
    sample_rate: object, window_size: object, hop_size: object, mel_bins: object, fmin: object, fmax: object
) -> list[str]:
    """What is wrong with these front-end settings, one line each naming the setting (empty: nothing).

    Checked before a network is built from a config or a checkpoint: a size of 0 fails deep
    inside torch, a huge one allocates gigabytes, and ``fmax`` above ``sample_rate / 2`` (upstream's
    default fmax) or below ``fmin`` leaves mel filters empty, which trains on silence.
    """
    found = []
    integers = {"sample_rate": (sample_rate, MAX_SAMPLE_RATE), "window_size": (window_size, MAX_WINDOW_SIZE)}
    for name, (value, largest) in integers.items():
        if not _is_int(value) or not 1 <= value <= largest:  # type: ignore[operator]
            found.append(f"{name} must be an integer in 1..{largest}, got {value!r}")
    if found:
        return found  # the bounds below are relative to these two
    assert isinstance(window_size, int) and isinstance(sample_rate, int)
    if not _is_int(hop_size) or not 1 <= hop_size <= window_size:  # type: ignore[operator]
        found.append(f"hop_size must be an integer in 1..window_size={window_size}, got {hop_size!r}")
    bins = window_size // 2 + 1
    if not _is_int(mel_bins) or not 1 <= mel_bins <= bins:  # type: ignore[operator]
        found.append(
            f"mel_bins must be an integer in 1..{bins} (window_size // 2 + 1 frequency bins), got {mel_bins!r}"
        )
    nyquist = sample_rate / 2
    if not _is_real(fmin) or not 0 <= fmin < nyquist:  # type: ignore[operator]
        found.append(f"fmin must be a number in [0, sample_rate / 2 = {nyquist:g}) Hz, got {fmin!r}")
    elif not _is_real(fmax) or not fmin < fmax <= nyquist:  # type: ignore[operator]
        found.append(
            f"fmax must be a number in ({fmin:g}, sample_rate / 2 = {nyquist:g}] Hz (above fmin), got {fmax!r}"
        )
    return found


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """An int or a finite float (not a bool)."""
    return (
        (isinstance(value, (int, float)) and not isinstance(value, bool))
        and value == value
        and abs(value) != float("inf")
    )


class LogmelFrontEndMixin:
    """Adds the PANNs front end to an ``nn.Module`` subclass.

    Call :meth:`build_logmel_frontend` in ``__init__`` and :meth:`logmel` in ``forward``.
    """

    spectrogram_extractor: Spectrogram
    logmel_extractor: LogmelFilterBank
    bn0: nn.BatchNorm2d
    spec_augmenter: SpecAugment
    training: bool

    def build_logmel_frontend(
        self,
        sample_rate: int,
        window_size: int,
        hop_size: int,
        mel_bins: int,
        fmin: float,
        fmax: float,
        stft: str = "conv",
        **spec_augment: int | None,
    ) -> None:
        """Register the front-end modules under upstream's attribute names.

        ``spec_augment``: :func:`build_spec_augmenter`'s stripe settings (the paper's by default).
        ``stft``: ``"conv"`` (upstream's arithmetic) or ``"fft"`` (same result, far fewer FLOPs;
        see the module docstring).
        """
        if stft not in STFT_IMPLEMENTATIONS:
            raise ValueError(f"stft must be one of {STFT_IMPLEMENTATIONS}, got {stft!r}")
        # torchlibrosa assigns CPU tensors to ``.data``, which fails under a meta default device
        # (used to read a model's key layout without allocating it); build those two on CPU then.
        device = "cpu" if torch.get_default_device().type == "meta" else None
        with torch.device(device) if device else contextlib.nullcontext():
            self._build_extractors(sample_rate, window_size, hop_size, mel_bins, fmin, fmax, stft)
        self.spec_augmenter = build_spec_augmenter(mel_bins, **spec_augment)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        init_bn(self.bn0)

    def _build_extractors(
        self, sample_rate: int, window_size: int, hop_size: int, mel_bins: int, fmin: float, fmax: float, stft: str
    ) -> None:
        self.spectrogram_extractor = copy.deepcopy(_spectrogram_prototype(stft, window_size, hop_size))
        self.logmel_extractor = LogmelFilterBank(
            sr=sample_rate,
            n_fft=window_size,
            n_mels=mel_bins,
            fmin=fmin,
            fmax=fmax,
            ref=LOGMEL_REF,
            amin=LOGMEL_AMIN,
            top_db=LOGMEL_TOP_DB,
            freeze_parameters=True,
        )

    def logmel(self, waveform: torch.Tensor, mixup_lambda: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` waveform → ``[B', 1, frames, mel_bins]`` normalised log-mel.

        SpecAugment and mixup act in training mode only; with mixup ``B' = B // 2``.
        """
        with full_precision(waveform):
            x = self.logmel_extractor(self.spectrogram_extractor(waveform.float()))
        # bn0 normalises each mel bin, so the mel axis is moved onto the channel axis for it.
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        if self.training:
            x = self.spec_augmenter(x)
        return mix_if_training(x, mixup_lambda, self.training)


class LogmelFeatures(nn.Module):
    """The log-mel (dB) a zoo network computes before ``bn0``, without the network (plots of exported models)."""

    spectrogram_extractor: Spectrogram
    logmel_extractor: LogmelFilterBank

    def __init__(
        self, sample_rate: int, window_size: int, hop_size: int, mel_bins: int, fmin: float, fmax: float
    ) -> None:
        super().__init__()
        LogmelFrontEndMixin._build_extractors(self, sample_rate, window_size, hop_size, mel_bins, fmin, fmax, "conv")  # type: ignore[arg-type]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` → ``[B, 1, frames, mel_bins]``."""
        return self.logmel_extractor(self.spectrogram_extractor(waveform.float()))


@functools.lru_cache(maxsize=8)
def _spectrogram_prototype(stft: str, window_size: int, hop_size: int) -> Spectrogram:
    """One STFT module per setting, copied for every model that needs it.

    torchlibrosa computes its DFT filters with numpy's complex power at construction (about half
    a second for n_fft=1024 on a CPU); a deep copy of a built one is the same tensors in
    milliseconds. Every model still gets its own copy (frozen parameters, as upstream).
    """
    spectrogram = FFTSpectrogram if stft == "fft" else Spectrogram
    with torch.device("cpu"):
        return spectrogram(
            n_fft=window_size,
            hop_length=hop_size,
            win_length=window_size,
            window=STFT_WINDOW,
            center=STFT_CENTER,
            pad_mode=STFT_PAD_MODE,
            freeze_parameters=True,
        )


def build_spec_augmenter(
    mel_bins: int,
    time_drop_width: int = PAPER_TIME_DROP_WIDTH,
    time_stripes_num: int = PAPER_TIME_STRIPES_NUM,
    freq_drop_width: int | None = None,
    freq_stripes_num: int = PAPER_FREQ_STRIPES_NUM,
) -> SpecAugment:
    """SpecAugment, the paper's stripes by default; ``freq_drop_width`` ``None``: ``mel_bins // 8``.

    That is the paper's 8 for 64 mel bins, and upstream's 4 / 16 for its 32 / 128-bin variants.
    """
    return SpecAugment(
        time_drop_width=time_drop_width,
        time_stripes_num=time_stripes_num,
        freq_drop_width=mel_bins // PAPER_FREQ_DROP_WIDTH_DIVISOR if freq_drop_width is None else freq_drop_width,
        freq_stripes_num=freq_stripes_num,
    )


class DropStripes(nn.Module):
    """Zero ``stripes_num`` random stripes of one axis of ``[B, C, time, freq]``, per example.

    The distribution of torchlibrosa's ``DropStripes`` (upstream's): each stripe's width is
    uniform in ``0 .. drop_width - 1`` and its start uniform over the positions where it fits,
    drawn independently per example. Drawn on the input's device for the whole batch at once:
    no per-example Python loop and no device value read on the host (torchlibrosa's loop reads
    two random numbers per stripe and example), which also lets ``torch.compile`` trace it.
    """

    def __init__(self, dim: int, drop_width: int, stripes_num: int) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 (time) or 3 (frequency), got {dim}")
        if drop_width < 1 or stripes_num < 0:
            raise ValueError(f"drop_width must be >= 1 and stripes_num >= 0, got {drop_width}, {stripes_num}")
        self.dim = dim
        self.drop_width = drop_width
        self.stripes_num = stripes_num

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.stripes_num == 0:
            return x
        batch, length = x.shape[0], x.shape[self.dim]
        shape = (batch, self.stripes_num, 1)
        widths = torch.randint(0, self.drop_width, shape, device=x.device)
        # Start uniform in 0 .. length - width - 1 (clipped at 1 choice when a stripe is longer than the axis).
        starts = (torch.rand(shape, device=x.device) * (length - widths).clamp(min=1)).long()
        positions = torch.arange(length, device=x.device)
        dropped = ((positions >= starts) & (positions < starts + widths)).any(dim=1)  # [B, length]
        view = (batch, 1, length, 1) if self.dim == 2 else (batch, 1, 1, length)
        return x.masked_fill(dropped.view(view), 0.0)


class SpecAugment(nn.Module):
    """Time then frequency stripes (Park et al. 2019, as PANNs uses it); no parameters, no state."""

    def __init__(
        self, time_drop_width: int, time_stripes_num: int, freq_drop_width: int, freq_stripes_num: int
    ) -> None:
        super().__init__()
        self.time_dropper = DropStripes(dim=2, drop_width=time_drop_width, stripes_num=time_stripes_num)
        self.freq_dropper = DropStripes(dim=3, drop_width=freq_drop_width, stripes_num=freq_stripes_num)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.freq_dropper(self.time_dropper(x))


class FFTSpectrogram(Spectrogram):
    """torchlibrosa's :class:`Spectrogram` (same parameters, same state_dict keys) computed with
    ``torch.stft`` instead of its DFT-as-convolution.

    The convolution filters stay registered, unused, so that published checkpoints load strictly.
    Settings are upstream's fixed ones (Hann window, centred, reflect padding, power 2).
    """

    def __init__(self, n_fft: int, hop_length: int, win_length: int, **kwargs: object) -> None:
        super().__init__(n_fft=n_fft, hop_length=hop_length, win_length=win_length, **kwargs)
        if STFT_WINDOW != "hann" or not STFT_CENTER or STFT_PAD_MODE != "reflect":
            raise ValueError("FFTSpectrogram implements upstream's Hann / centred / reflect STFT only")
        self.n_fft = n_fft
        self.hop_length = hop_length
        # librosa's "hann" with fftbins=True is the periodic Hann window.
        self.register_buffer("fft_window", torch.hann_window(win_length, periodic=True), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` → power spectrogram ``[B, 1, frames, n_fft // 2 + 1]``.

        While an ONNX export traces it, the spectrum is asked for as real and imaginary parts
        (``return_complex=False``, same numbers): the exporter maps ``torch.stft`` onto ONNX's STFT
        operator (opset 17) only in that form, and refuses complex outputs outright.
        """
        real_pairs = torch.onnx.is_in_onnx_export()
        spectrum = torch.stft(
            waveform,
            self.n_fft,
            self.hop_length,
            window=self.fft_window.to(waveform.dtype),
            center=True,
            pad_mode="reflect",
            return_complex=not real_pairs,
        )
        power = (spectrum if real_pairs else torch.view_as_real(spectrum)).square().sum(-1)
        return power.transpose(1, 2).unsqueeze(1)
