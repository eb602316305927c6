"""Fuzz tests (hypothesis) of the readers that take bytes from someone else (issue 19).

For any input each reader gives a clear error (its own exception type, one line) or a correct
result, never another exception, and its memory stays bounded (``tracemalloc`` peak, which sees
NumPy's buffers): the WAV / raw PCM stream reader, the CSV reader of ``panns-prepare csv``, the
AudioSet segment CSV reader and the HDF5 row loader (tiny files written with h5py). Examples are
derandomised (the same cases every run) and kept small so each test takes a few seconds.
"""

from __future__ import annotations

import io
import itertools
import re
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from panns_lightning import audio
from panns_lightning.datasets import hdf5_rows
from panns_lightning.datasets.audioset import parse_segments_csv
from panns_lightning.datasets.custom_csv import read_csv_table
from panns_lightning.live.pcm import MAX_READ_BYTES, StreamFormatError, open_pcm_stream

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MEMORY_LIMIT = 8 << 20  # bytes: every input here is a few kB; a reader that trusts a size field blows past this


class Peak:
    """``with Peak() as peak:`` ... ``peak.bytes``: the most memory traced inside the block."""

    def __enter__(self) -> Peak:
        tracemalloc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


# ---- the WAV / raw PCM stream reader ------------------------------------------------------------

u32 = st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 16, 0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF]))


@st.composite
def wav_streams(draw: st.DrawFn) -> bytes:
    """RIFF headers with every field drawn (sizes, rates, channels, formats), extra chunks, then samples."""
    tag = draw(st.sampled_from([1, 3, 0xFFFE, 2, 0]))
    channels = draw(st.one_of(st.integers(0, 4), st.sampled_from([1024, 1025, 65535])))
    rate = draw(st.one_of(st.sampled_from([8000, 44100, 44101, 16001, 999, 384001, 1_000_003]), u32))
    bits = draw(st.sampled_from([8, 16, 24, 32, 64, 0, 7, 12]))
    fmt = struct.pack("<HHIIHH", tag, channels, rate, 0, 0, bits)
    fmt += draw(st.binary(max_size=30))
    fmt_size = draw(st.one_of(st.just(len(fmt)), u32))
    chunks = b""
    for _ in range(draw(st.integers(0, 2))):
        body = draw(st.binary(max_size=20))
        chunks += (
            draw(st.sampled_from([b"LIST", b"JUNK", b"fact"]))
            + struct.pack("<I", draw(st.one_of(st.just(len(body)), u32)))
            + body
        )
    riff = draw(st.sampled_from([b"RIFF", b"RF64"]))
    head = riff + struct.pack("<I", draw(u32)) + b"WAVE" + chunks + b"fmt " + struct.pack("<I", fmt_size) + fmt
    data = b"data" + struct.pack("<I", draw(st.one_of(u32, st.integers(0, 64)))) + draw(st.binary(max_size=3000))
    return (head + data)[: draw(st.integers(0, len(head) + len(data)))] if draw(st.booleans()) else head + data


@settings(FUZZ, max_examples=400)
@given(data=st.one_of(wav_streams(), st.binary(max_size=400)), fmt=st.sampled_from(["auto", "wav", "s16le", "f32le"]))
def test_stream_reader_gives_samples_or_a_clear_error(data: bytes, fmt: str) -> None:
    with Peak() as peak:
        try:
            # a BufferedReader, as sys.stdin.buffer is: read(n) allocates n bytes before it looks at the stream
            pipe = io.BufferedReader(io.BytesIO(data))
            stream = open_pcm_stream(pipe, sample_format=fmt, default_rate=32000)
            chunks = list(stream.chunks(257))
        except StreamFormatError as error:
            assert "\n" not in str(error) and str(error).startswith(("stdin", "unknown stream format"))
            chunks = None
    assert peak.bytes < MEMORY_LIMIT
    if chunks is None:
        return
    info = stream.info
    assert 1000 <= info.sample_rate <= 384000 and 1 <= info.channels <= 1024
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    assert samples.dtype == np.float32 and np.isfinite(samples).all()
    if info.sample_format.kind != "float":  # integers scale into [-1, 1]; float PCM may go past it
        assert np.abs(samples).max(initial=0) <= 1.0
    assert all(0 < c.shape[0] <= max(1, MAX_READ_BYTES // info.frame_bytes) for c in chunks[:-1])
    if info.container == "raw" and fmt == "s16le":  # the result is the bytes read as int16
        whole = len(data) // 2 * 2
        np.testing.assert_array_equal(samples, np.frombuffer(data[:whole], "<i2").astype(np.float32) / 32768)


# ---- the CSV reader of panns-prepare csv -----------------------------------------------------------

cells = st.one_of(
    st.sampled_from(["a.wav", "b.wav", "sub/c.wav", "gone.wav", "/abs.wav", "", "dog", "cat,dog", "1", "2", "0",
                     "train", "val", "test", "tets", "0.5", "1e306", "nan", "-1", "1e-9", "\x00", '"', "x" * 300, "y" * 140_000]),
    st.text(max_size=12),
)  # fmt: skip
HEADERS = ["file", "label", "labels", "fold", "split", "start", "end", "notes", ""]


@settings(FUZZ, max_examples=100)
@given(
    header=st.lists(st.sampled_from(HEADERS), min_size=1, max_size=6),
    rows=st.lists(st.lists(cells, max_size=7), max_size=8),
    delimiter=st.sampled_from([",", ";", "\t"]),
)
def test_csv_reader_gives_records_or_a_clear_error(tmp_path: Path, header: list[str], rows, delimiter: str) -> None:
    folder = tmp_path / "set"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for name in ("a.wav", "b.wav", "sub/c.wav"):
        (folder / name).write_bytes(b"RIFF")
    lines = [delimiter.join(header)] + [delimiter.join(_quoted(cell, delimiter) for cell in row) for row in rows]
    path = folder / "list.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    with Peak() as peak:
        try:
            dataset = read_csv_table(path)
        except (ValueError, FileNotFoundError) as error:
            assert str(error).startswith(str(path))
            dataset = None
    assert peak.bytes < MEMORY_LIMIT
    if dataset is None:
        return
    records, skipped = dataset.result.records, dataset.result.skipped
    assert len({r.key for r in records}) == len(records)  # keys unique by construction
    assert len(records) + len(skipped) <= len(rows)
    for record in records:
        assert Path(record.audio_path).is_file() and record.labels
        assert all(0 <= c < len(dataset.labels) for c in record.labels)
        if record.segment is not None:
            start, end = record.segment
            assert 0 <= start and (end is None or start + 0.05 <= end <= 1e7)


def _quoted(cell: str, delimiter: str) -> str:
    if any(c in cell for c in (delimiter, '"', "\n", "\r")):
        return '"' + cell.replace('"', '""') + '"'
    return cell


# ---- the AudioSet segment CSV reader ---------------------------------------------------------------

segment_fields = st.one_of(
    st.sampled_from(["--PJHxphWEs", "0.000", "10.000", "inf", "nan", "-1", '"/m/a,/m/b"', "/m/a", "", "1e306", '"', "x" * 50,
                     "y" * 140_000]),
    st.text(max_size=10),
)  # fmt: skip


@settings(FUZZ, max_examples=200)
@given(lines=st.lists(st.lists(segment_fields, max_size=6), max_size=10), comment=st.booleans())
def test_segment_csv_reader_gives_rows_or_reports_them(tmp_path: Path, lines, comment: bool) -> None:
    text = ("# a\n# b\n# YTID, start_seconds, end_seconds, positive_labels\n" if comment else "") + "\n".join(
        ", ".join(fields) for fields in lines
    )
    path = tmp_path / "segments.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with Peak() as peak:
        rows, problems = parse_segments_csv(path)
    assert peak.bytes < MEMORY_LIMIT
    assert len(rows) + len(problems) <= len(re.split(r"\r\n|\r|\n", text))  # at most one entry per line
    assert len({row.ytid for row in rows}) == len(rows)
    for row in rows:
        assert row.ytid and row.mids and np.isfinite(row.end_seconds) and 0 <= row.start_seconds < row.end_seconds


# ---- the HDF5 row loader ------------------------------------------------------------------------------

h5py = pytest.importorskip("h5py")
_FILE_NUMBERS = itertools.count()

rate_attributes = st.one_of(
    st.none(),
    st.sampled_from([32000, 8000, 16001, 0, -1, 2**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["32000", b"", "x"]),
    st.lists(st.integers(-5, 50000), max_size=3).map(lambda v: np.array(v, dtype=np.int64)),
)


@settings(FUZZ, max_examples=80)
@given(
    rows=st.integers(1, 3),
    width=st.integers(0, 400),
    rate=rate_attributes,
    names=st.lists(st.sampled_from([b"Yaaaaaaaaaaa.wav", b".", b".wav", b"", b"a/b.wav", b"\xff\xfe"]), min_size=3, max_size=3),
    target_values=st.lists(st.sampled_from([0, 1, -1, 2, 0.5]), min_size=9, max_size=9),
    target_dtype=st.sampled_from(["bool", "int8", "float32"]),
    clip_samples=st.integers(1, 600),
)  # fmt: skip
def test_hdf5_row_loader_gives_clips_or_a_clear_error(
    tmp_path: Path, rows, width, rate, names, target_values, target_dtype, clip_samples
) -> None:
    from panns_lightning.datasets.audioset_hdf5 import read_packed_hdf5
    from panns_lightning.labels import LabelSet

    path = tmp_path / f"fuzz{next(_FILE_NUMBERS)}.h5"  # a new name each time: a handle left open cannot block it
    with h5py.File(path, "w") as f:
        f.create_dataset("audio_name", data=np.array(names[:rows], dtype="S20"))
        waveform = (np.arange(rows * width).reshape(rows, width) % 200 - 100).astype(np.int16)
        f.create_dataset("waveform", data=waveform)
        f.create_dataset("target", data=np.array(target_values[: rows * 3]).reshape(rows, 3).astype(target_dtype))
        if rate is not None:
            f.attrs["sample_rate"] = rate
    labels = LabelSet(mids=("/m/a", "/m/b", "/m/c"), names=("a", "b", "c"))
    hdf5_rows.close_open_files()
    with Peak() as peak:
        try:
            found = read_packed_hdf5([path], labels)
        except ValueError as error:
            assert str(path) in str(error)
            found = None
        loaded = []
        for record in found.result.records if found else []:
            try:
                loaded.append(found.load_clip(record.audio_path, 8000, clip_samples, min_seconds=0.05))
            except audio.AudioDecodeError as error:
                assert "too short" in error.reason
        hdf5_rows.close_open_files()
    assert peak.bytes < MEMORY_LIMIT
    if found is None:
        return
    assert len(found.result.records) + len(found.result.skipped) == rows
    assert len({r.key for r in found.result.records}) == len(found.result.records)
    for clip in loaded:
        assert clip.shape == (clip_samples,) and clip.dtype in (np.int16, np.float32)
