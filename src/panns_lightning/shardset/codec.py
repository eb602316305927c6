"""The shard codec: waveform ↔ the bytes of a clip's audio member (``KEY.npy`` or ``KEY.flac``).

One encoder (:func:`encode_member`, used by the writer) and one decoder (:func:`decode_member`,
used by the train and eval streams, the benchmarks and the tests), so the two storages cannot
drift apart: both quantise as ``round(x * 32767)`` and read back as ``x / 32767``
(:data:`INT16_SCALE`, upstream PANNs' HDF5 packing), sample for sample.

Audio members are mono. A member with several channels (a 2-D ``.npy``, a stereo FLAC) was not
written by :func:`encode_member`: it is rejected (``ValueError``, reported with its clip and shard
by the stream and counted against the error budget), not down-mixed, in both storages. Converters
down-mix when they decode a source file (:func:`panns_lightning.audio.load_audio`), which is
where a choice of mix belongs.

Members come with the data, so decoding trusts nothing in them: a member's size is capped by the
reader (``data.max_member_bytes``) and its decoded length by the manifest's ``clip_samples``
(a FLAC that expands to more frames is refused before they are allocated). Plain NumPy at import
time; soundfile is imported only for FLAC, so a DataLoader worker of an int16 set never loads it.
"""

from __future__ import annotations

import io

import numpy as np

INT16_SCALE = 32767
"""Float ↔ int16 scale of both storages, shared with upstream PANNs' HDF5 packing (x·32767, read back /32767)."""


def encode_int16(waveform: np.ndarray) -> np.ndarray:
    """Float waveform → int16 as ``round(x·32767)``, clipped to the int16 range; int16 input is already stored as is."""
    if isinstance(waveform, np.ndarray) and waveform.dtype == np.int16:
        return waveform
    scaled = np.round(np.asarray(waveform, dtype=np.float64) * INT16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def encode_member(waveform: np.ndarray, *, storage: str, sample_rate: int) -> bytes:
    """A mono waveform (float, or int16 as stored) → the audio member's bytes for ``storage``.

    ``int16``: the int16 array in ``np.save`` format; ``flac``: 16-bit FLAC at ``sample_rate``
    holding the same int16 samples, so both storages decode to identical waveforms.
    """
    samples = encode_int16(waveform)
    if samples.ndim != 1:
        raise ValueError(f"an audio member is mono: expected a 1-D waveform, got shape {samples.shape}")
    buffer = io.BytesIO()
    if storage == "int16":
        np.save(buffer, samples, allow_pickle=False)
    elif storage == "flac":
        import soundfile  # local: only flac sets need libsndfile

        soundfile.write(buffer, samples, sample_rate, format="FLAC", subtype="PCM_16")
    else:
        raise ValueError(f"unknown storage {storage!r}; expected 'int16' or 'flac'")
    return buffer.getvalue()


def decode_member(data: bytes, *, storage: str, sample_rate: int, clip_samples: int) -> np.ndarray:
    """Audio member bytes → its int16 samples, checked against the manifest; ``ValueError`` says what does not match.

    ``int16`` members come back as a read-only view of ``data`` (no copy: the train stream copies
    them once, into its batch). :func:`samples_to_float` scales them.
    """
    if storage == "int16":
        samples = npy_view(data)
        if samples.dtype != np.int16:
            raise ValueError(f"expected an int16 .npy member, found {samples.dtype} with shape {samples.shape}")
        if samples.ndim != 1:
            raise ValueError(
                f"expected a mono (1-D) .npy member, found shape {samples.shape}: shard audio is mono "
                "(converters down-mix when they decode)"
            )
    elif storage == "flac":
        samples = _decode_flac(data, sample_rate, clip_samples)
    else:
        raise ValueError(f"unknown storage {storage!r}; expected 'int16' or 'flac'")
    if samples.shape[0] != clip_samples:
        raise ValueError(f"expected {clip_samples} samples (manifest clip_samples), found {samples.shape[0]}")
    return samples


def samples_to_float(samples: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int16 samples → float32 ``x / 32767`` (into ``out`` when given: the train stream writes into its batch).

    Computed in float32, bit-identical to ``samples.astype(float32) / 32767`` without the
    intermediate copy.
    """
    return np.divide(samples, np.float32(INT16_SCALE), out=out, dtype=np.float32)


def decode_waveform(data: bytes, *, storage: str, sample_rate: int, clip_samples: int) -> np.ndarray:
    """Audio member bytes → float32 [clip_samples]: :func:`decode_member` then :func:`samples_to_float`."""
    return samples_to_float(decode_member(data, storage=storage, sample_rate=sample_rate, clip_samples=clip_samples))


def _decode_flac(data: bytes, sample_rate: int, clip_samples: int) -> np.ndarray:
    """A FLAC member's int16 samples: mono, at the manifest's rate, never more than ``clip_samples + 1`` read."""
    import soundfile  # local: only flac sets need libsndfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as handle:
            if handle.channels != 1:
                raise ValueError(
                    f"expected a mono FLAC member, found {handle.channels} channels: shard audio is mono "
                    "(converters down-mix when they decode)"
                )
            if handle.samplerate != sample_rate:
                raise ValueError(f"FLAC sample rate {handle.samplerate} differs from the manifest's {sample_rate}")
            # One frame past the clip is enough to tell "too long" without decoding a hostile member's rest.
            return handle.read(frames=clip_samples + 1, dtype="int16")
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile errors are not one type
        raise ValueError(f"not a readable FLAC ({type(exc).__name__}: {exc})") from exc


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
