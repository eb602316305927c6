"""Decode, resample and crop audio files (the shard members' codec is ``shardset/codec.py``).

This is the only module that reads audio files. Decoding goes through soundfile
(libsndfile: wav, flac, ogg, mp3, au, aiff, ...) because torchaudio >= 2.9 no longer decodes;
resampling goes through torchaudio's sinc resampler (``torchaudio.transforms.Resample``, whose
filter is built once per rate pair and cached: building it costs more than applying it).

Rates come from the input, so they are bounded (:mod:`panns_lightning.input_limits`, 1-384 kHz)
and so is the filter: torchaudio's kernel has ``target/g x (2 width + source/g)`` taps for
``g = gcd(source, target)``, which is 147 k for 44.1 → 32 kHz but 1.4 G (5.6 GB) for the coprime
44 101 → 32 000. Above :data:`MAX_RESAMPLE_KERNEL` taps the same filter is applied phase by phase
(:mod:`panns_lightning.polyphase`, a few MB); every common pair still goes through torchaudio.

``resample_method="decimate"`` reproduces upstream PANNs instead, for fine-tuning its published
16 kHz / 8 kHz checkpoints: those saw audio packed at 32 kHz and then decimated (``x[0::2]``,
``x[0::4]``) without an anti-aliasing filter, so content above the new Nyquist folds down.
"""

from __future__ import annotations

import functools
import io
import math
import os
import struct
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as AT

from panns_lightning.input_limits import PANNS_SAMPLE_RATE, SampleRateError, check_sample_rate
from panns_lightning.polyphase import polyphase_resample, sinc_width

AudioSource = Union[str, os.PathLike, bytes]

RESAMPLE_METHODS = ("sinc", "decimate")
"""``sinc``: band-limited resampling to the target rate (the default). ``decimate``: upstream's way."""
DECIMATE_FROM_RATE = PANNS_SAMPLE_RATE
"""``decimate`` takes every k-th sample of the clip at this rate (upstream's packing rate)."""

# Extra source frames read past the crop so the resampling filter sees real signal at the end.
_RESAMPLE_MARGIN_FRAMES = 256
# Frames per read: bounds the memory of reading a window (8 channels x 64 Ki frames x 4 B = 2 MiB).
_READ_BLOCK_FRAMES = 1 << 16
# Containers whose frame count may be an estimate (MP3 without a Xing/LAME tag, Ogg granule positions).
_ESTIMATED_LENGTH_FORMATS = frozenset({"MP3", "MPEG", "OGG"})
_CODEC_SLACK_FRAMES = 1152  # one MPEG-1 layer III frame, on top of 1% of the declared length
# Data-chunk sizes a streaming writer leaves when it cannot seek back to fill in the length.
_WAV_UNKNOWN_SIZES = frozenset({0, 0xFFFFFFFF})
_MAX_RIFF_CHUNKS = 64  # LIST/bext/JUNK chunks before "data"; more than this is not a WAV we trust
MAX_RESAMPLE_KERNEL = 1 << 21
"""Taps (float32) of the largest torchaudio kernel built: 8 MiB. 44.1 → 32 kHz needs 147 k, 11.025 → 32 kHz 582 k."""


class AudioDecodeError(Exception):
    """A file (or byte string) that could not be turned into a usable waveform."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def load_audio(
    source: AudioSource,
    target_sr: int,
    clip_samples: int | None = None,
    *,
    offset_seconds: float = 0.0,
    min_seconds: float = 0.0,
    resample_method: str = "sinc",
) -> np.ndarray:
    """Decode ``source`` to float32 mono at ``target_sr``, padded/cropped to ``clip_samples``.

    When ``clip_samples`` is given only the frames needed for it are read (in blocks), so an
    hour-long file costs as much as a 10 s one. Channels are averaged; any rate is resampled
    (``resample_method``: see :data:`RESAMPLE_METHODS` and :func:`decimation_step`).
    Raises :class:`AudioDecodeError` for a missing, empty (0 bytes or 0 frames), unreadable,
    truncated (see :func:`wav_truncation` and :func:`_read_window`) or non-finite file, and for
    one shorter than ``min_seconds`` (when it is also shorter than the window asked for).
    """
    check_sample_rate(target_sr, "target_sr")
    if resample_method == "decimate":
        # Upstream: the clip at 32 kHz (resampled there if the file is not), padded/cropped, then
        # every k-th sample. Cropping k x clip_samples first makes the result exactly clip_samples.
        step = decimation_step(target_sr)
        window = None if clip_samples is None else clip_samples * step
        full = load_audio(source, DECIMATE_FROM_RATE, window, offset_seconds=offset_seconds, min_seconds=min_seconds)
        return np.ascontiguousarray(full[::step])
    if resample_method != "sinc":
        raise ValueError(f"resample_method must be one of {RESAMPLE_METHODS}, got {resample_method!r}")
    name = _describe(source)
    _check_exists_and_not_empty(source, name)
    truncation = wav_truncation(source)
    if truncation is not None:
        declared, present = truncation
        raise AudioDecodeError(name, f"truncated: header says {declared} frames, got {present}")
    try:
        # A path goes as bytes (os.fsencode): soundfile encodes str paths strictly, so a file name that is
        # not valid UTF-8 (surrogate escapes) would fail although the file is fine.
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fsencode(source)) as f:
            source_sr = check_sample_rate(f.samplerate, "sample rate")
            start = int(round(offset_seconds * source_sr))
            if start and start >= f.frames:
                raise AudioDecodeError(
                    name, f"starts at {offset_seconds:g} s, past the end of the audio ({f.frames / source_sr:.2f} s)"
                )
            if start:
                f.seek(start)
            wanted = -1
            if clip_samples is not None:
                wanted = math.ceil(clip_samples * source_sr / target_sr) + _RESAMPLE_MARGIN_FRAMES
            mono = _read_window(f, name, start, wanted)
    except SampleRateError as error:
        raise AudioDecodeError(name, str(error)) from None
    except (sf.SoundFileError, RuntimeError, ValueError, EOFError) as error:
        raise AudioDecodeError(name, _decode_failure(error)) from error

    if mono.shape[0] == 0:
        raise AudioDecodeError(name, "empty audio (0 frames)")
    _check_min_length(name, mono.shape[0], source_sr, min_seconds, wanted)
    if not np.isfinite(mono).all():
        raise AudioDecodeError(name, "contains non-finite samples (NaN or inf)")
    mono = resample(mono, source_sr, target_sr)
    if clip_samples is not None:
        mono = fit_length(mono, clip_samples)
    return np.ascontiguousarray(mono, dtype=np.float32)


def wav_truncation(source: AudioSource) -> tuple[int, int] | None:
    """``(frames the header declares, frames on disk)`` for a RIFF/WAVE file cut short, else ``None``.

    libsndfile silently shrinks a WAV's frame count to what is on disk, so a half-downloaded
    WAV would decode as a shorter, valid clip. Only the chunk headers are read. The streaming
    placeholders 0 and 0xFFFFFFFF (length unknown when the writer could not seek back) are
    accepted; non-WAV files (and RF64, W64) return ``None``.
    """
    try:
        if isinstance(source, (bytes, bytearray)):
            return _riff_data_shortfall(io.BytesIO(source), len(source))
        with open(source, "rb") as handle:
            return _riff_data_shortfall(handle, os.fstat(handle.fileno()).st_size)
    except OSError:
        return None  # unreadable: libsndfile will say so with a better message


def resample(waveform: np.ndarray, source_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float32 signal (no-op when the rates match).

    Both rates must lie in :func:`panns_lightning.input_limits.sample_rate_range`
    (:class:`~panns_lightning.input_limits.SampleRateError` otherwise). Every common pair goes
    through torchaudio (bit for bit ``torchaudio.functional.resample``); a pair whose kernel
    would pass :data:`MAX_RESAMPLE_KERNEL` taps goes through :mod:`panns_lightning.polyphase`
    (the same filter at the same ratio, float32 rounding apart).
    """
    if source_sr == target_sr:
        return waveform
    up, down = resample_ratio(source_sr, target_sr)
    return resample_by_ratio(waveform, up, down)


def resample_by_ratio(waveform: np.ndarray, up: int, down: int) -> np.ndarray:
    """Resample by ``up / down`` (in lowest terms, as :func:`resample_ratio` gives): ``ceil(n up / down)`` samples."""
    if not uses_torchaudio(up, down):
        return polyphase_resample(waveform, up, down)
    tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    with torch.no_grad():
        return _resampler(down, up)(tensor).numpy()


def resample_ratio(source_sr: int, target_sr: int) -> tuple[int, int]:
    """``(up, down)``: ``target / source`` in lowest terms, both rates checked against the supported range."""
    source_sr = check_sample_rate(source_sr, "source sample rate")
    target_sr = check_sample_rate(target_sr, "target sample rate")
    divisor = math.gcd(source_sr, target_sr)
    return target_sr // divisor, source_sr // divisor


def uses_torchaudio(up: int, down: int) -> bool:
    """Whether ``up / down`` is resampled by torchaudio's kernel (at most :data:`MAX_RESAMPLE_KERNEL` taps)."""
    return up * (2 * sinc_width(up, down) + down) <= MAX_RESAMPLE_KERNEL


def decimation_step(target_sr: int) -> int:
    """k for ``decimate``: ``DECIMATE_FROM_RATE / target_sr``, which must be a whole number.

    Upstream decimated 32 kHz audio by 2 (16 kHz) and 4 (8 kHz); any divisor of 32000 works the
    same way (k = 1 is 32 kHz itself: then ``decimate`` equals ``sinc``).
    """
    if target_sr <= 0 or DECIMATE_FROM_RATE % target_sr:
        raise ValueError(
            f"resampling by decimation takes every k-th sample of the {DECIMATE_FROM_RATE} Hz signal, so the "
            f"sample rate must divide {DECIMATE_FROM_RATE} (e.g. 16000, 8000), got {target_sr}"
        )
    return DECIMATE_FROM_RATE // target_sr


@functools.lru_cache(maxsize=16)
def _resampler(down: int, up: int) -> AT.Resample:
    """Same filter as ``torchaudio.functional.resample``; e.g. 22050 → 32000 Hz (441 → 640) is a 640 x 461 kernel.

    At most :data:`MAX_RESAMPLE_KERNEL` taps each, so the cache holds at most 128 MiB.
    """
    return AT.Resample(down, up, dtype=torch.float32)


def fit_length(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop the tail or pad zeros at the end so the clip is exactly ``num_samples`` long."""
    if waveform.shape[0] >= num_samples:
        return waveform[:num_samples]
    return np.pad(waveform, (0, num_samples - waveform.shape[0]))


def _describe(source: AudioSource) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return str(source)


def _check_exists_and_not_empty(source: AudioSource, name: str) -> None:
    """Give missing and 0-byte files their own reasons (libsndfile calls both "format not recognised")."""
    if isinstance(source, (bytes, bytearray)):
        size = len(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(name, "file not found")
        size = path.stat().st_size
    if size == 0:
        raise AudioDecodeError(name, "empty file (0 bytes)")


def _riff_data_shortfall(handle: BinaryIO, total_size: int) -> tuple[int, int] | None:
    """Walk RIFF chunk headers to ``data``; compare its declared size with the bytes present."""
    head = handle.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    order = "<" if head[:4] == b"RIFF" else ">"
    block_align = 0
    position = 12
    for _ in range(_MAX_RIFF_CHUNKS):
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            return None
        chunk_id, (size,) = header[:4], struct.unpack(order + "I", header[4:])
        if chunk_id == b"fmt ":
            fmt = handle.read(min(size, 16))
            block_align = struct.unpack(order + "H", fmt[12:14])[0] if len(fmt) >= 14 else 0
        elif chunk_id == b"data":
            present = max(total_size - position - 8, 0)
            if block_align <= 0 or size in _WAV_UNKNOWN_SIZES or present >= size:
                return None
            return size // block_align, present // block_align
        position += 8 + size + (size & 1)  # chunks are word-aligned
    return None


def _read_window(f: sf.SoundFile, name: str, start: int, wanted: int) -> np.ndarray:
    """Read ``wanted`` frames (-1: to the end) in blocks, averaged to mono, and insist the header's promise is kept.

    Each block is averaged over its channels as it arrives, so memory is the mono window plus
    one block whatever the channel count (a header may claim 1024 channels).

    The header's frame count says how many frames exist from ``start``; getting fewer than
    ``min(wanted, that)`` means the file ends early (a truncated MP3 decodes "fine" but short),
    and a decoder error part-way (a truncated FLAC loses sync) means the same or corruption.
    MP3/Ogg headers can estimate the length, so a shortfall of one codec frame plus 1% of the
    declared length is tolerated there (the clip is then padded like any short clip);
    WAV/FLAC/AIFF/AU must be exact. Damage past the window is not looked for in compressed
    files (that would mean decoding all of a long file); in WAV it is (header arithmetic).
    """
    available = max(f.frames - start, 0)
    expected = available if wanted < 0 else min(wanted, available)
    blocks: list[np.ndarray] = []
    got = 0
    while got < expected:
        try:
            block = f.read(frames=min(_READ_BLOCK_FRAMES, expected - got), dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as error:
            raise AudioDecodeError(
                name,
                f"truncated or corrupt: header says {f.frames} frames, decoding failed after {start + got} ({_libsndfile_detail(error)})",
            ) from error
        if block.shape[0] == 0:
            break
        blocks.append(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0].copy())
        got += block.shape[0]
    if expected - got > _tolerated_shortfall(f.format, f.frames):
        raise AudioDecodeError(name, f"truncated: header says {f.frames} frames, got {start + got}")
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def _tolerated_shortfall(container: str, declared_frames: int) -> int:
    if container.upper() in _ESTIMATED_LENGTH_FORMATS:
        return _CODEC_SLACK_FRAMES + declared_frames // 100
    return 0


def _check_min_length(name: str, frames: int, source_sr: int, min_seconds: float, wanted: int) -> None:
    """Too short = below ``min_seconds`` AND below the window asked for (a tiny crop is not a fault)."""
    minimum = math.ceil(min_seconds * source_sr)
    if wanted >= 0:
        minimum = min(minimum, wanted)
    if frames < minimum:
        raise AudioDecodeError(
            name,
            f"too short: {frames} frame{'s' if frames != 1 else ''} at {source_sr} Hz ({1000 * frames / source_sr:.1f} ms), minimum is {1000 * min_seconds:g} ms",
        )


def _decode_failure(error: BaseException) -> str:
    """libsndfile's own message ("Format not recognised.") groups well in skip summaries."""
    detail = _libsndfile_detail(error)
    if "does not exist or is not a regular file" in detail:
        # What libsndfile says of an existing file in which mpg123 finds no MPEG frame (e.g. a cut-off mp3).
        detail = "no decodable audio stream found"
    return f"cannot decode: {detail}"


def _libsndfile_detail(error: BaseException) -> str:
    detail = (getattr(error, "error_string", None) or str(error)).strip()
    return detail.removeprefix("Error : ")
