"""Audio member bytes → samples: the one decoder of a shard's ``.npy`` (int16) and ``.flac`` members.

Every reader of shards decodes here (``train_stream``, ``eval_stream``, the benchmarks), and every
check of a member against its manifest (dtype, shape, sample rate, length) is made here, so a
damaged clip raises one ``ValueError`` saying what does not match.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def decode_waveform(data: bytes, *, storage: str, sample_rate: int, clip_samples: int) -> np.ndarray:
    """Audio member bytes → float32 [clip_samples]; ``ValueError`` says what does not match the manifest."""
    samples = decode_samples(data, storage=storage, sample_rate=sample_rate, clip_samples=clip_samples)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32767.0
    return samples


def samples_to_float(samples: np.ndarray, out: np.ndarray) -> None:
    """Write ``samples`` (int16 as stored, or float32) into the float32 ``out`` of the same length.

    int16 → x / 32767 computed in float32, bit-identical to ``samples.astype(float32) / 32767``
    but without the intermediate copy (the train stream writes straight into its batch).
    """
    if samples.dtype == np.int16:
        np.divide(samples, np.float32(32767.0), out=out, dtype=np.float32)
    else:
        out[...] = samples


def decode_samples(data: bytes, *, storage: str, sample_rate: int, clip_samples: int) -> np.ndarray:
    """Audio member bytes → checked samples: an int16 view of the payload (no copy) or float32 (FLAC)."""
    if storage == "int16":
        array = npy_view(data)
        if array.dtype != np.int16 or array.ndim != 1:
            raise ValueError(f"expected 1-D int16 .npy, found {array.dtype} with shape {array.shape}")
        waveform = array
    elif storage == "flac":
        import soundfile  # local: only flac shard sets need libsndfile

        try:
            waveform, file_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=False)
        except Exception as exc:  # noqa: BLE001 - libsndfile errors are not one type
            raise ValueError(f"not a readable FLAC ({type(exc).__name__}: {exc})") from exc
        if waveform.ndim != 1:
            raise ValueError(f"expected mono FLAC, found shape {waveform.shape}")
        if file_rate != sample_rate:
            raise ValueError(f"FLAC sample rate {file_rate} differs from the manifest's {sample_rate}")
    else:
        raise ValueError(f"unknown storage {storage!r}")
    if waveform.shape[0] != clip_samples:
        raise ValueError(f"expected {clip_samples} samples (manifest clip_samples), found {waveform.shape[0]}")
    return waveform


# Every clip of a shard set has the same .npy header: parse each distinct header once.
_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool]] = {}
_NPY_MAGIC = b"\x93NUMPY"


def npy_view(data: bytes) -> np.ndarray:
    """A read-only array over a ``.npy`` payload, without copying it (``np.load`` copies via BytesIO).

    ``ValueError`` for anything that is not a complete, non-object ``.npy`` array.
    """
    if data[:6] != _NPY_MAGIC or len(data) < 10:
        raise ValueError("not a .npy array (no NUMPY magic)")
    major = data[6]
    if major == 1:
        start = 10
        header_length = int.from_bytes(data[8:10], "little")
    elif major in (2, 3):
        start = 12
        header_length = int.from_bytes(data[8:12], "little")
    else:
        raise ValueError(f"not a .npy array (format version {major})")
    offset = start + header_length
    header = data[:offset]
    parsed = _NPY_HEADERS.get(header)
    if parsed is None:
        try:
            handle = io.BytesIO(header)
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        except Exception as exc:  # noqa: BLE001 - numpy raises several types for bad headers
            raise ValueError(f"not a .npy array ({type(exc).__name__}: {exc})") from exc
        if dtype.hasobject:
            raise ValueError("not a plain .npy array (object dtype)")
        parsed = (dtype, tuple(shape), bool(fortran))
        if len(_NPY_HEADERS) < 64:
            _NPY_HEADERS[header] = parsed
    dtype, shape, fortran = parsed
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - offset < count * dtype.itemsize:  # trailing bytes are ignored, as np.load does
        raise ValueError(f"truncated .npy array: {len(data) - offset} data bytes for shape {shape} of {dtype}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")


def multi_hot(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """Class indices → float32 multi-hot of length ``num_classes``; ``ValueError`` on an index out of range."""
    target = np.zeros(num_classes, dtype=np.float32)
    for index in labels:
        if not 0 <= index < num_classes:
            raise ValueError(f"label index {index} outside 0..{num_classes - 1}")
        target[index] = 1.0
    return target
