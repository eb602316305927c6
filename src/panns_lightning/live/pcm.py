"""Decode an endless PCM byte stream (raw samples or a WAV stream) into mono float32 chunks.

Files go through :mod:`panns_lightning.audio` (libsndfile), which needs to seek; a pipe cannot, so
this module reads what ``ffmpeg -f s16le -`` or ``ffmpeg -f wav -`` writes to stdout:

* raw little-endian PCM (``s16le``, ``s32le``, ``f32le``) whose rate and channel count are given;
* a WAV stream: ``RIFF``/``RF64`` header, chunks up to ``data``, then samples. A writer that cannot
  seek back leaves the data size as ``0xFFFFFFFF`` or ``0``: the samples then run to end of file.

Integers scale by ``2**(bits-1)`` (as libsndfile does, so a stream and the same file read by
:func:`panns_lightning.audio.load_audio` agree); channels are averaged.

Every number in a header is bounded before it sizes anything: the sample rate
(:func:`panns_lightning.input_limits.check_sample_rate`, 1-384 kHz), the channel count
(:data:`MAX_CHANNELS`), the ``fmt `` chunk (:data:`MAX_FMT_CHUNK_BYTES`) and the chunks skipped
before the samples (16 MiB, read and dropped in pieces); no read asks for more than
:data:`MAX_READ_BYTES` at once, so a chunk size of 0xFFFFFFF0 costs nothing until the bytes arrive.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from panns_lightning.input_limits import SampleRateError, check_sample_rate

logger = logging.getLogger(__name__)

# WAV data sizes a writer leaves when it cannot seek back (ffmpeg on a pipe writes 0xFFFFFFFF).
WAV_UNKNOWN_SIZES = frozenset({0, 0xFFFFFFFF})
_MAX_CHUNKS_BEFORE_DATA = 64
_MAX_SKIPPED_CHUNK_BYTES = 16 << 20  # a LIST/bext chunk this large before the samples is not a WAV stream
MAX_FMT_CHUNK_BYTES = 4096
"""A ``fmt `` chunk is 16, 18 or 40 bytes (WAVE_FORMAT_EXTENSIBLE); larger is not a WAV stream."""
MAX_CHANNELS = 1024
"""libsndfile's own ceiling (``SF_MAX_CHANNELS``): a WAV header's 16-bit field allows 65 535."""
MAX_READ_BYTES = 1 << 20
"""Largest single read: chunks of wide frames or long hops come in pieces of at most 1 MiB."""
_WAVE_FORMAT_PCM, _WAVE_FORMAT_FLOAT, _WAVE_FORMAT_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
# Magic numbers of containers people pipe in by mistake: they need decoding first.
_COMPRESSED_MAGIC = {b"ID3": "MP3", b"\xff\xfb": "MP3", b"\xff\xf3": "MP3", b"fLaC": "FLAC", b"OggS": "Ogg"}


class StreamFormatError(ValueError):
    """The byte stream is not the PCM it was said to be (or cannot be decoded at all)."""


@dataclass(frozen=True)
class SampleFormat:
    """One PCM sample encoding: ``kind`` is ``int`` (signed), ``uint`` (8-bit WAV) or ``float``."""

    name: str
    width: int
    """Bytes per sample."""
    kind: str

    def decode(self, data: bytes, channels: int) -> np.ndarray:
        """``data`` (whole frames) → float32 ``[frames]``, channels averaged."""
        if self.kind == "float":
            samples = np.frombuffer(data, dtype=f"<f{self.width}").astype(np.float32)
        elif self.width == 3:  # no numpy dtype: place the 3 bytes in the top of an int32
            raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            samples = ((raw[:, 0] << 8) | (raw[:, 1] << 16) | (raw[:, 2] << 24)).astype(np.float32) / 2.0**31
        elif self.kind == "uint":
            samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
        else:
            samples = np.frombuffer(data, dtype=f"<i{self.width}").astype(np.float32) / float(2 ** (8 * self.width - 1))
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1)
        return np.ascontiguousarray(samples, dtype=np.float32)


RAW_FORMATS: dict[str, SampleFormat] = {
    "s16le": SampleFormat("s16le", 2, "int"),
    "s32le": SampleFormat("s32le", 4, "int"),
    "f32le": SampleFormat("f32le", 4, "float"),
}
"""Raw formats accepted on a pipe (``ffmpeg -f <name>`` writes them)."""
STREAM_FORMATS = ("auto", "wav", *RAW_FORMATS)
"""``auto``: WAV when the stream starts with a RIFF header, else raw ``s16le``."""
_WAV_FORMATS = {
    ("int", 1): SampleFormat("u8", 1, "uint"),
    ("int", 2): SampleFormat("s16le", 2, "int"),
    ("int", 3): SampleFormat("s24le", 3, "int"),
    ("int", 4): SampleFormat("s32le", 4, "int"),
    ("float", 4): SampleFormat("f32le", 4, "float"),
    ("float", 8): SampleFormat("f64le", 8, "float"),
}


@dataclass(frozen=True)
class StreamInfo:
    """What the samples are: encoding, rate, channels, and where they came from."""

    sample_format: SampleFormat
    sample_rate: int
    channels: int
    container: str
    """``"wav"`` or ``"raw"``."""
    data_bytes: int | None = None
    """Bytes of samples a WAV header declares; ``None``: until end of stream."""

    @property
    def frame_bytes(self) -> int:
        return self.sample_format.width * self.channels

    def describe(self) -> str:
        layout = "mono" if self.channels == 1 else f"{self.channels} channels"
        return f"{self.container} {self.sample_format.name}, {layout}, {self.sample_rate} Hz"


class PcmStream:
    """Mono float32 chunks from a binary stream whose layout :class:`StreamInfo` describes.

    Reads block until a whole chunk has arrived (or the stream ends), so on a live pipe one chunk
    per hop comes out as soon as the hop's samples exist. Ending in the middle of a frame is an
    error (raised after the last whole chunk has been yielded).
    """

    def __init__(self, stream: BinaryIO, info: StreamInfo, *, name: str = "stdin", prefix: bytes = b"") -> None:
        self.stream = stream
        self.info = info
        self.name = name
        self._prefix = prefix
        self.frames_read = 0

    def chunks(self, frames: int) -> Iterator[np.ndarray]:
        """Yield ``[frames]`` float32 arrays (the last one shorter) until the stream ends.

        A chunk over :data:`MAX_READ_BYTES` of input comes as several smaller ones.
        """
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        frame_bytes = self.info.frame_bytes
        frames = min(frames, max(1, MAX_READ_BYTES // frame_bytes))
        remaining = self.info.data_bytes
        pending = b""
        while True:
            want = frames * frame_bytes - len(pending)
            if remaining is not None:
                want = min(want, remaining)
            data = self._read(want) if want > 0 else b""
            if remaining is not None:
                remaining -= len(data)
            pending += data
            whole = len(pending) - len(pending) % frame_bytes
            if whole:
                chunk = self.info.sample_format.decode(pending[:whole], self.info.channels)
                if not np.isfinite(chunk).all():
                    at = (self.frames_read + int(np.argmin(np.isfinite(chunk)))) / self.info.sample_rate
                    raise StreamFormatError(f"{self.name}: NaN or inf sample at {at:.3f} s")
                self.frames_read += chunk.shape[0]
                pending = pending[whole:]
                yield chunk
            if len(data) < want or want <= 0:  # end of stream (or of the declared WAV data)
                break
        if remaining:
            logger.warning(
                "%s: the WAV header declares %d bytes of samples, the stream ended %d bytes short",
                self.name,
                self.info.data_bytes,
                remaining,
            )
        if pending:
            raise StreamFormatError(
                f"{self.name}: ended with {len(pending)} stray byte{'s' if len(pending) != 1 else ''}, not a whole "
                f"frame of {self.info.sample_format.name} x {self.info.channels} channel"
                f"{'s' if self.info.channels != 1 else ''} ({frame_bytes} bytes per frame): wrong --stdin-format "
                "or --stdin-channels, or a cut-off stream"
            )

    def _read(self, size: int) -> bytes:
        head, self._prefix = self._prefix[:size], self._prefix[size:]
        if len(head) == size:
            return head
        parts = [head]
        got = len(head)
        while got < size:  # read() on a raw pipe may return less than asked before the end
            part = self.stream.read(min(size - got, MAX_READ_BYTES))
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)


def open_pcm_stream(
    stream: BinaryIO,
    *,
    sample_format: str = "auto",
    sample_rate: int | None = None,
    channels: int | None = None,
    default_rate: int | None = None,
    name: str = "stdin",
) -> PcmStream:
    """Read a WAV header if there is one (or ``sample_format == "wav"``), else describe raw PCM.

    ``sample_rate``/``channels`` describe raw PCM (default ``default_rate`` and mono); with a WAV
    stream the header decides, and a given value that contradicts it is an error.
    """
    if sample_format not in STREAM_FORMATS:
        raise StreamFormatError(f"unknown stream format {sample_format!r}; expected one of {', '.join(STREAM_FORMATS)}")
    if channels is not None and not 1 <= channels <= MAX_CHANNELS:
        raise StreamFormatError(f"{name}: the channel count must be 1..{MAX_CHANNELS}, got {channels}")
    if sample_rate is not None:
        _checked_rate(sample_rate, f"{name}: the sample rate")
    if sample_format in RAW_FORMATS:
        return PcmStream(stream, _raw_info(sample_format, sample_rate, channels, default_rate, name), name=name)
    head = _read_exactly(stream, 4)
    if head in (b"RIFF", b"RF64"):
        info = _read_wav_header(stream, head, name)
        for label, given, actual in (
            ("--stdin-rate", sample_rate, info.sample_rate),
            ("--stdin-channels", channels, info.channels),
        ):
            if given is not None and given != actual:
                raise StreamFormatError(f"{name}: {label} {given} contradicts the WAV header ({info.describe()})")
        return PcmStream(stream, info, name=name)
    if sample_format == "wav":
        raise StreamFormatError(f"{name}: not a WAV stream: it starts with {head!r}, not b'RIFF'")
    if not head:
        raise StreamFormatError(f"{name}: empty stream (no bytes)")
    for magic, container in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            raise StreamFormatError(
                f"{name}: looks like {container}, which is not decoded here; decode it to PCM first, e.g. "
                "ffmpeg -i INPUT -f wav -ac 1 - | panns-tag --stream - ..."
            )
    info = _raw_info("s16le", sample_rate, channels, default_rate, name)
    logger.warning(
        "%s: no RIFF header, reading raw %s (set --stdin-format, --stdin-rate, --stdin-channels if that is wrong)",
        name,
        info.describe().removeprefix("raw "),
    )
    return PcmStream(stream, info, name=name, prefix=head)


def _raw_info(fmt: str, rate: int | None, channels: int | None, default_rate: int | None, name: str) -> StreamInfo:
    rate = rate or default_rate
    if rate is None:
        raise StreamFormatError(
            f"{name}: raw PCM carries no sample rate, so it must be given: --stdin-rate HZ (what ffmpeg's -ar "
            "sent), or send WAV instead (ffmpeg ... -f wav -), whose header says it"
        )
    return StreamInfo(
        RAW_FORMATS[fmt], _checked_rate(rate, f"{name}: the raw PCM sample rate"), int(channels or 1), "raw"
    )


def _checked_rate(rate: int, what: str) -> int:
    try:
        return check_sample_rate(rate, what)
    except SampleRateError as error:
        raise StreamFormatError(str(error)) from None


def _read_wav_header(stream: BinaryIO, riff: bytes, name: str) -> StreamInfo:
    rest = _read_exactly(stream, 8)
    if len(rest) < 8 or rest[4:] != b"WAVE":
        raise StreamFormatError(f"{name}: {riff.decode()} header without 'WAVE' form type: not a WAV stream")
    fmt: tuple[SampleFormat, int, int] | None = None
    for _ in range(_MAX_CHUNKS_BEFORE_DATA):
        header = _read_exactly(stream, 8)
        if len(header) < 8:
            raise StreamFormatError(f"{name}: WAV stream ended before its 'data' chunk")
        chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk_id == b"fmt ":
            if size > MAX_FMT_CHUNK_BYTES:
                raise StreamFormatError(
                    f"{name}: WAV 'fmt ' chunk claims {size} bytes (at most {MAX_FMT_CHUNK_BYTES}): not a WAV stream"
                )
            fmt = _parse_fmt(_read_exactly(stream, size), name)
            _read_exactly(stream, size & 1)
        elif chunk_id == b"data":
            if fmt is None:
                raise StreamFormatError(f"{name}: WAV 'data' chunk before its 'fmt ' chunk")
            sample_format, rate, channels = fmt
            known = riff == b"RIFF" and size not in WAV_UNKNOWN_SIZES
            return StreamInfo(sample_format, rate, channels, "wav", size if known else None)
        else:
            if size > _MAX_SKIPPED_CHUNK_BYTES:
                raise StreamFormatError(f"{name}: {size}-byte {chunk_id!r} chunk before the samples: not a WAV stream")
            _skip(stream, size + (size & 1))  # chunks are word-aligned
    raise StreamFormatError(f"{name}: no 'data' chunk within the first {_MAX_CHUNKS_BEFORE_DATA} WAV chunks")


def _parse_fmt(body: bytes, name: str) -> tuple[SampleFormat, int, int]:
    if len(body) < 16:
        raise StreamFormatError(f"{name}: WAV 'fmt ' chunk of {len(body)} bytes (need 16)")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the format tag
    kind = {_WAVE_FORMAT_PCM: "int", _WAVE_FORMAT_FLOAT: "float"}.get(tag)
    sample_format = _WAV_FORMATS.get((kind, bits // 8)) if kind is not None and bits % 8 == 0 else None
    if sample_format is None:
        raise StreamFormatError(
            f"{name}: WAV format tag {tag:#06x} with {bits}-bit samples is not supported "
            "(integer PCM of 8/16/24/32 bits or 32/64-bit float)"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise StreamFormatError(f"{name}: WAV header with {channels} channels (1..{MAX_CHANNELS} supported)")
    return sample_format, _checked_rate(rate, f"{name}: the WAV header's sample rate"), channels


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, or fewer at the end of the stream; never asks for more than :data:`MAX_READ_BYTES` at once."""
    parts, got = [], 0
    while got < size:
        part = stream.read(min(size - got, MAX_READ_BYTES))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _skip(stream: BinaryIO, size: int) -> None:
    """Read and drop ``size`` bytes (a pipe cannot seek), one bounded piece at a time."""
    while size > 0:
        part = stream.read(min(size, MAX_READ_BYTES))
        if not part:
            return
        size -= len(part)
