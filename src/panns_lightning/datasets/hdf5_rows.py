"""Clips stored as rows of HDF5 files: opening files (h5py is optional), naming a row, loading one.

A record's ``audio_path`` is a *row location*, ``"/abs/path/file.h5::ROW"``, and the shard
writer calls :func:`load_waveform_row` or :func:`load_mp3_row` on it instead of decoding a file
(``write_shards(load_clip=...)``). Both run in the writer's worker processes: each opens the
files it needs once and keeps them open (:func:`open_hdf5`), so a conversion reads one row at a
time and never holds a file's audio in memory. h5py must not have a file open when the pool
forks, so the reader closes what it opened (:func:`close_open_files`) before converting.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from panns_lightning import audio
from panns_lightning.input_limits import PANNS_SAMPLE_RATE, SampleRateError, check_sample_rate
from panns_lightning.shardset.codec import samples_to_float

INSTALL_HINT = "pip install 'panns-lightning[hdf5]'"
LOCATION_SEPARATOR = "::"
UPSTREAM_SAMPLE_RATE = PANNS_SAMPLE_RATE
"""Upstream PANNs packs at 32 kHz and records it as the file attribute ``sample_rate``."""

_MAX_OPEN_FILES = 64  # upstream's full training set spans 42 packed files
_open_files: OrderedDict[str, Any] = OrderedDict()


class MissingHdf5Support(ImportError):
    """h5py is not installed: the HDF5 converters are an optional extra."""


def require_h5py() -> ModuleType:
    """The h5py module, or :class:`MissingHdf5Support` saying how to install it."""
    try:
        import h5py
    except ImportError as error:
        raise MissingHdf5Support(f"reading HDF5 files needs h5py ({error}); install it with {INSTALL_HINT}") from None
    return h5py


def row_location(path: str | os.PathLike, row: int) -> str:
    """The ``audio_path`` of one row: the file's absolute path and the row index."""
    return f"{Path(path).resolve()}{LOCATION_SEPARATOR}{int(row)}"


def parse_location(location: str) -> tuple[str, int]:
    """``(file path, row)`` from :func:`row_location`'s string."""
    path, separator, row = str(location).rpartition(LOCATION_SEPARATOR)
    if not separator or not row.isdigit():
        raise ValueError(f"not an HDF5 row location ('FILE{LOCATION_SEPARATOR}ROW'): {location!r}")
    return path, int(row)


def open_hdf5(path: str) -> Any:
    """A read-only ``h5py.File``, opened once per process and kept (the least recently used closes first)."""
    handle = _open_files.get(path)
    if handle is not None:
        _open_files.move_to_end(path)
        return handle
    h5py = require_h5py()
    handle = h5py.File(path, "r")
    _open_files[path] = handle
    while len(_open_files) > _MAX_OPEN_FILES:
        _open_files.popitem(last=False)[1].close()
    return handle


def close_open_files() -> None:
    """Close every file :func:`open_hdf5` opened in this process."""
    while _open_files:
        _open_files.popitem()[1].close()


def file_sample_rate(handle: Any) -> int:
    """A packed file's ``sample_rate`` attribute (upstream writes it), else upstream's 32 kHz.

    The attribute is input: anything but one whole number in the supported range (an empty
    array, text, 1e30, a compound value) is a ``ValueError`` naming the file.
    """
    try:
        rate = handle.attrs.get("sample_rate")
    except Exception as error:  # h5py cannot even read it (an unsupported type)
        raise ValueError(f"{handle.filename}: attribute sample_rate is unreadable ({error})") from None
    if rate is None:
        return UPSTREAM_SAMPLE_RATE
    values = np.asarray(rate).reshape(-1)
    if values.shape[0] != 1 or values.dtype.kind not in "iuf":
        raise ValueError(
            f"{handle.filename}: attribute sample_rate must be one number of Hz, found {_shown(rate)} ({values.dtype})"
        )
    try:
        return check_sample_rate(values[0].item(), f"{handle.filename}: attribute sample_rate")
    except SampleRateError as error:
        raise ValueError(str(error)) from None


def load_waveform_row(
    location: str, target_sr: int, clip_samples: int, *, min_seconds: float = 0.0, resample_method: str = "sinc"
) -> np.ndarray:
    """The int16 ``waveform`` row of a packed file at ``target_sr``, padded/cropped to ``clip_samples``.

    At the file's own rate the int16 samples come back untouched (stored bit for bit); otherwise
    they are resampled: ``sinc``, or ``decimate`` (every k-th sample of the 32 kHz row, exactly
    what upstream's 16/8 kHz models were trained on). A packed row has the fixed length upstream
    padded it to; a file whose rows are shorter than ``min_seconds`` (0 samples, say) holds no
    clip, and padding it would store labelled silence: :class:`~panns_lightning.audio.AudioDecodeError`.
    """
    path, row = parse_location(location)
    handle = open_hdf5(path)
    samples = np.asarray(handle["waveform"][row], dtype=np.int16).reshape(-1)
    rate = file_sample_rate(handle)
    if samples.shape[0] < max(1, math.ceil(min_seconds * rate)):
        raise audio.AudioDecodeError(
            location, f"row of {samples.shape[0]} samples at {rate} Hz: too short to be a clip"
        )
    if rate == target_sr:
        return _fit_int16(samples, clip_samples)
    if resample_method == "decimate":
        step = audio.decimation_step(target_sr)
        if rate == audio.DECIMATE_FROM_RATE:
            return _fit_int16(samples, clip_samples * step)[::step].copy()
        waveform = audio.resample(samples_to_float(samples), rate, audio.DECIMATE_FROM_RATE)
        return audio.fit_length(waveform, clip_samples * step)[::step].copy()
    return audio.fit_length(audio.resample(samples_to_float(samples), rate, target_sr), clip_samples)


def load_mp3_row(
    location: str, target_sr: int, clip_samples: int, *, min_seconds: float = 0.0, resample_method: str = "sinc"
) -> np.ndarray:
    """Decode the ``mp3`` bytes of one row (PaSST / EfficientAT layout) like any audio file."""
    path, row = parse_location(location)
    encoded = np.asarray(open_hdf5(path)["mp3"][row], dtype=np.uint8).tobytes()
    return audio.load_audio(encoded, target_sr, clip_samples, min_seconds=min_seconds, resample_method=resample_method)


def _fit_int16(samples: np.ndarray, num_samples: int) -> np.ndarray:
    if samples.shape[0] >= num_samples:
        return samples[:num_samples]
    return np.concatenate([samples, np.zeros(num_samples - samples.shape[0], dtype=np.int16)])


def _shown(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 60 else text[:57] + "..."
