"""Decode, resample and crop audio; encode/decode the two in-shard storage formats.

This is the only module that touches audio files. Decoding goes through soundfile
(libsndfile: wav, flac, ogg, mp3, au, aiff, ...) because torchaudio >= 2.9 no longer decodes;
resampling goes through ``torchaudio.functional.resample``.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

AudioSource = Union[str, os.PathLike, bytes]

INT16_SCALE = 32767
"""Float ↔ int16 scale shared with upstream PANNs' HDF5 packing (x·32767, read back /32767)."""

# Extra source frames read past the crop so the resampling filter sees real signal at the end.
_RESAMPLE_MARGIN_FRAMES = 256


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
) -> np.ndarray:
    """Decode ``source`` to float32 mono at ``target_sr``, padded/cropped to ``clip_samples``.

    When ``clip_samples`` is given only the frames needed for it are read, so an hour-long
    file costs as much as a 10 s one. Raises :class:`AudioDecodeError` for missing, unreadable,
    empty or non-finite audio.
    """
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    name = _describe(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise AudioDecodeError(name, "file not found")
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as f:
            source_sr = f.samplerate
            start = int(round(offset_seconds * source_sr))
            if start:
                f.seek(start)
            frames = -1
            if clip_samples is not None:
                frames = math.ceil(clip_samples * source_sr / target_sr) + _RESAMPLE_MARGIN_FRAMES
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, ValueError, EOFError) as error:
        # libsndfile's own message ("Format not recognised") groups well in skip summaries.
        detail = getattr(error, "error_string", None) or str(error)
        raise AudioDecodeError(name, f"cannot decode: {detail}") from error

    if data.shape[0] == 0:
        raise AudioDecodeError(name, "empty audio (0 frames)")
    if not np.isfinite(data).all():
        raise AudioDecodeError(name, "contains non-finite samples (NaN or inf)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    mono = resample(mono, source_sr, target_sr)
    if clip_samples is not None:
        mono = fit_length(mono, clip_samples)
    return np.ascontiguousarray(mono, dtype=np.float32)


def resample(waveform: np.ndarray, source_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float32 signal (no-op when the rates match)."""
    if source_sr == target_sr:
        return waveform
    tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    return AF.resample(tensor, source_sr, target_sr).numpy()


def fit_length(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop the tail or pad zeros at the end so the clip is exactly ``num_samples`` long."""
    if waveform.shape[0] >= num_samples:
        return waveform[:num_samples]
    return np.pad(waveform, (0, num_samples - waveform.shape[0]))


def encode_int16(waveform: np.ndarray) -> np.ndarray:
    """Float waveform → int16 as ``round(x·32767)``, clipped to the int16 range."""
    scaled = np.round(np.asarray(waveform, dtype=np.float64) * INT16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def decode_int16(samples: np.ndarray) -> np.ndarray:
    """int16 samples → float32 as ``x / 32767`` (inverse of :func:`encode_int16`)."""
    return (np.asarray(samples, dtype=np.float32) / INT16_SCALE).astype(np.float32)


def encode_flac(waveform: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16-bit FLAC bytes; quantised exactly like :func:`encode_int16` so both storages agree."""
    buffer = io.BytesIO()
    sf.write(buffer, encode_int16(waveform), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_flac(payload: bytes) -> np.ndarray:
    """FLAC bytes → float32 mono (``int16 / 32767``, the inverse of :func:`encode_flac`)."""
    samples, _ = sf.read(io.BytesIO(payload), dtype="int16", always_2d=True)
    return decode_int16(samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0])


def encode_npy(waveform: np.ndarray) -> bytes:
    """The ``KEY.npy`` shard member: an int16 array in ``np.save`` format."""
    buffer = io.BytesIO()
    np.save(buffer, encode_int16(waveform), allow_pickle=False)
    return buffer.getvalue()


def decode_npy(payload: bytes) -> np.ndarray:
    """The inverse of :func:`encode_npy`: float32 waveform from ``np.save`` int16 bytes."""
    return decode_int16(np.load(io.BytesIO(payload), allow_pickle=False))


def decode_stored_audio(extension: str, payload: bytes) -> np.ndarray:
    """Decode a shard member by its extension (``npy`` or ``flac``) to a float32 waveform."""
    extension = extension.lower().lstrip(".")
    if extension == "npy":
        return decode_npy(payload)
    if extension == "flac":
        return decode_flac(payload)
    raise ValueError(f"unknown stored audio extension {extension!r}; expected 'npy' or 'flac'")


def _describe(source: AudioSource) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return str(source)
