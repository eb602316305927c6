"""Live and endless audio: PCM/WAV stream decoding, chunked resampling, the ring, the event
tracker's hysteresis, StreamTagger on a controllable model, and ``panns-tag --stream -``."""

from __future__ import annotations

import io
import json
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.audio import resample
from panns_lightning.cli import tag
from panns_lightning.live.events import EventTracker
from panns_lightning.live.pcm import StreamFormatError, open_pcm_stream
from panns_lightning.live.resample import StreamResampler
from panns_lightning.live.ring import SampleRing
from panns_lightning.live.tagger import StreamTagger
from test_inference_support import LABEL_NAMES, SMALL_FRONTEND, cnn6_checkpoint

pytestmark = pytest.mark.usefixtures("two_torch_threads")

SRC = Path(__file__).resolve().parents[1] / "src"
MODEL_RATE = SMALL_FRONTEND["sample_rate"]  # 8 kHz: the Cnn6 test checkpoint's rate


def burst(
    rate: int, before: float = 2.0, length: float = 2.0, after: float = 3.0, amplitude: float = 0.5
) -> np.ndarray:
    """Silence, a 440 Hz tone, silence (float32 mono)."""
    signal = np.zeros(int(round((before + length + after) * rate)), dtype=np.float32)
    start, stop = int(round(before * rate)), int(round((before + length) * rate))
    t = np.arange(stop - start) / rate
    signal[start:stop] = amplitude * np.sin(2 * np.pi * 440 * t)
    return signal


def s16le(signal: np.ndarray) -> bytes:
    return (np.clip(signal, -1, 1) * 32767).round().astype("<i2").tobytes()


def piped_wav(signal: np.ndarray, rate: int, *, data_size: int = 0xFFFFFFFF, list_chunk: bytes = b"") -> bytes:
    """A 16-bit WAV as ffmpeg writes it to a pipe: sizes it cannot seek back to fill in."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    extra = b""
    if list_chunk:
        extra = b"LIST" + struct.pack("<I", len(list_chunk)) + list_chunk + b"\0" * (len(list_chunk) & 1)
    header = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + extra
    return header + b"data" + struct.pack("<I", data_size) + s16le(signal)


class Trickle(io.RawIOBase):
    """A pipe that hands out at most ``step`` bytes per read, as a slow writer does."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self.data, self.step, self.position = data, step, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        out = self.data[self.position : self.position + size]
        self.position += len(out)
        return out


def read_all(stream, frames: int = 1000) -> np.ndarray:
    chunks = list(stream.chunks(frames))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


# ---- EventTracker ------------------------------------------------------------------------------
def test_tracker_reports_each_event_once_with_hysteresis_and_flushes_at_the_end() -> None:
    tracker = EventTracker(3, onset=0.5, offset=0.3, onset_hops=2, offset_hops=2)
    track = [0.1, 0.6, 0.7, 0.4, 0.6, 0.2, 0.1, 0.1]  # 0.4: inside the band, the event goes on
    spike = [0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1]  # never two hops in a row: no event
    events = []
    for hop, (a, b) in enumerate(zip(track, spike), 1):
        events += tracker.update(float(hop), np.array([a, b, 0.95]), window_start=max(hop - 2.0, 0.0))
    events += tracker.flush(8.5)
    summary = [(e.kind, e.index, e.time, e.decided) for e in events]
    assert summary == [
        ("onset", 2, 0.0, 2.0),  # class 2 from the first hop (the stream's start), decided at the second
        ("onset", 0, 1.0, 3.0),  # the window before the run >= 0.5 ends at 1 s
        ("offset", 0, 4.0, 7.0),  # first window of the run < 0.3 is [4, 6]: the sound ended by its start
        ("offset", 2, 8.5, 8.5),  # still active at the end of the stream
    ]
    offset = events[2]
    assert offset.onset == 1.0 and offset.duration == 3.0 and offset.probability == pytest.approx(0.7)


def test_tracker_offset_is_never_before_its_onset_and_thresholds_are_checked() -> None:
    tracker = EventTracker(1, onset=0.5, offset=0.5, onset_hops=1, offset_hops=1)
    assert [e.kind for e in tracker.update(1.0, np.array([0.8]), window_start=0.0)] == ["onset"]
    (offset,) = tracker.update(1.5, np.array([0.1]), window_start=-0.5)  # window start before the onset
    assert offset.kind == "offset" and offset.time == 0.0 and offset.duration == 0.0
    with pytest.raises(ValueError, match="offset <= onset"):
        EventTracker(2, onset=0.3, offset=0.5)
    with pytest.raises(ValueError, match="hops"):
        EventTracker(2, onset_hops=0)
    with pytest.raises(ValueError, match="expected 2 probabilities"):
        EventTracker(2).update(1.0, np.zeros(3))


# ---- resampling, ring ----------------------------------------------------------------------------
@pytest.mark.parametrize("source, target", [(44100, 32000), (8000, 16000), (48000, 8000), (16000, 16000)])
def test_chunked_resampling_equals_resampling_the_whole_signal(source: int, target: int) -> None:
    rng = np.random.default_rng(source)
    signal = rng.standard_normal(source + 123).astype(np.float32)
    resampler, pieces, position = StreamResampler(source, target), [], 0
    while position < signal.shape[0]:
        size = int(rng.integers(1, 3000))
        pieces.append(resampler.push(signal[position : position + size]))
        position += size
    pieces.append(resampler.finish())
    streamed, whole = np.concatenate(pieces), resample(signal, source, target)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_ring_keeps_the_latest_samples_across_wraps() -> None:
    ring = SampleRing(5)
    ring.extend(np.arange(3, dtype=np.float32))
    np.testing.assert_array_equal(ring.latest(10), [0, 1, 2])
    ring.extend(np.arange(3, 7, dtype=np.float32))
    np.testing.assert_array_equal(ring.latest(5), [2, 3, 4, 5, 6])
    np.testing.assert_array_equal(ring.latest(2), [5, 6])
    ring.extend(np.arange(10, 20, dtype=np.float32))
    np.testing.assert_array_equal(ring.latest(5), [15, 16, 17, 18, 19])
    assert ring.total == 17 and len(ring) == 5


# ---- PCM streams ----------------------------------------------------------------------------------
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", "DOUBLE"])
def test_wav_stream_decodes_like_libsndfile(tmp_path: Path, subtype: str) -> None:
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.9, 0.9, (4000, 2)).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, stereo, 11025, subtype=subtype)
    expected = sf.read(path, dtype="float32")[0].mean(axis=1)
    stream = open_pcm_stream(Trickle(path.read_bytes(), step=301))
    assert stream.info.sample_rate == 11025 and stream.info.channels == 2 and stream.info.container == "wav"
    np.testing.assert_allclose(read_all(stream, 777), expected, atol=1e-7)


def test_piped_wav_with_unknown_size_and_extra_chunks_reads_to_the_end() -> None:
    signal = burst(8000, 0.1, 0.2, 0.1)
    data = piped_wav(signal, 8000, list_chunk=b"INFOISFT\x05\0\0\0Lavf\0")  # odd-sized chunk: padded
    stream = open_pcm_stream(io.BytesIO(data))
    assert stream.info.data_bytes is None
    np.testing.assert_allclose(read_all(stream), np.round(signal * 32767) / 32768, atol=1e-7)


def test_wav_with_a_known_size_stops_at_its_data_chunk() -> None:
    signal = np.full(100, 0.25, dtype=np.float32)
    data = piped_wav(signal, 8000, data_size=200) + b"id3 " + struct.pack("<I", 3) + b"xyz\0"
    assert read_all(open_pcm_stream(io.BytesIO(data))).shape == (100,)


@pytest.mark.parametrize(
    "fmt, dtype, scale", [("s16le", "<i2", 32768.0), ("s32le", "<i4", 2.0**31), ("f32le", "<f4", 1.0)]
)
def test_raw_pcm_formats_and_channel_downmix(fmt: str, dtype: str, scale: float) -> None:
    frames = np.array([[0.5, -0.25], [0.125, 0.125], [-1.0, 0.0]])
    data = (frames * (scale if fmt != "f32le" else 1.0)).astype(dtype).tobytes()
    stream = open_pcm_stream(Trickle(data, 3), sample_format=fmt, sample_rate=16000, channels=2)
    np.testing.assert_allclose(read_all(stream, 2), frames.mean(axis=1), atol=1e-6)


def test_bad_streams_get_clear_errors() -> None:
    stream = open_pcm_stream(io.BytesIO(b"\x01\x00" * 5 + b"\x02"), sample_format="s16le", sample_rate=8000)
    chunks = stream.chunks(4)
    assert [c.shape[0] for c in (next(chunks), next(chunks))] == [4, 1]  # whole frames come out first
    with pytest.raises(StreamFormatError, match="1 stray byte, not a whole frame of s16le"):
        next(chunks)
    with pytest.raises(StreamFormatError, match="unknown stream format 's24be'"):
        open_pcm_stream(io.BytesIO(b""), sample_format="s24be")
    with pytest.raises(StreamFormatError, match="looks like MP3"):
        open_pcm_stream(io.BytesIO(b"ID3\x04rest"))
    with pytest.raises(StreamFormatError, match="empty stream"):
        open_pcm_stream(io.BytesIO(b""), default_rate=8000)
    with pytest.raises(StreamFormatError, match="not a WAV stream"):
        open_pcm_stream(io.BytesIO(b"\0\0\0\0"), sample_format="wav")
    with pytest.raises(StreamFormatError, match="--stdin-rate 16000 contradicts the WAV header"):
        open_pcm_stream(io.BytesIO(piped_wav(np.zeros(8), 8000)), sample_rate=16000)
    with pytest.raises(StreamFormatError, match="raw PCM carries no sample rate, so it must be given: --stdin-rate"):
        open_pcm_stream(io.BytesIO(b"\0\0"), sample_format="s16le")
    nan = open_pcm_stream(
        io.BytesIO(np.array([0] * 999 + [np.nan], "<f4").tobytes()), sample_format="f32le", sample_rate=10000
    )
    with pytest.raises(StreamFormatError, match="NaN or inf sample at 0.100 s"):
        read_all(nan)


# ---- StreamTagger ----------------------------------------------------------------------------------
def loudness_model(window: np.ndarray) -> np.ndarray:
    """Class 0 follows the window's RMS (0.5 at RMS 0.1); class 1 is never present."""
    rms = float(np.sqrt(np.mean(window**2)))
    return np.array([min(1.0, 5 * rms), 0.0], dtype=np.float32)


def stream_through(signal: np.ndarray, chunk: int, **options) -> tuple[list, list]:
    tagger = StreamTagger(
        loudness_model,
        sample_rate=MODEL_RATE,
        input_rate=16000,
        window_seconds=1.0,
        hop_seconds=0.25,
        tracker=EventTracker(2, onset=0.5, offset=0.3, **options),
    )
    hops = []
    for start in range(0, signal.shape[0], chunk):
        hops += tagger.push(signal[start : start + chunk])
    last, closing = tagger.finish()
    return hops + last, [event for hop in hops + last for event in hop.events] + closing


def test_stream_tagger_reports_one_onset_and_one_offset_near_the_burst() -> None:
    signal = burst(16000)  # tone from 2 s to 4 s of 7 s; pushed at 16 kHz, the model runs at 8 kHz
    hops, events = stream_through(signal, 1234, onset_hops=1, offset_hops=1)
    assert [hop.time for hop in hops] == pytest.approx([0.25 * k for k in range(1, 29)])
    assert [hop.index for hop in hops] == list(range(1, 29))
    assert all(hop.time - hop.start == pytest.approx(min(1.0, hop.time)) for hop in hops)
    assert [(e.kind, e.index) for e in events] == [("onset", 0), ("offset", 0)]
    onset, offset = events
    assert onset.time == 2.0 and offset.time == 4.0  # heard at once: exact to the hop grid
    assert onset.decided == 2.25 and offset.decided == 5.0


def test_stream_tagger_does_not_depend_on_how_the_input_is_chunked() -> None:
    signal = burst(16000, 0.5, 1.0, 1.1)  # 2.6 s: ends with a partial hop at 2.6 s
    first_hops, first_events = stream_through(signal, 16000)
    second_hops, second_events = stream_through(signal, 333)
    assert [hop.time for hop in first_hops] == [hop.time for hop in second_hops]
    assert first_hops[-1].time == pytest.approx(2.6)
    np.testing.assert_allclose(
        np.stack([h.probabilities for h in first_hops]), np.stack([h.probabilities for h in second_hops]), atol=1e-5
    )
    assert [(e.kind, e.time) for e in first_events] == [(e.kind, e.time) for e in second_events]


def test_stream_tagger_on_a_checkpoint_sees_what_the_file_tagger_sees() -> None:
    from panns_lightning.inference import AudioTagger

    tagger = AudioTagger(cnn6_checkpoint())
    signal = np.random.default_rng(3).uniform(-0.5, 0.5, 3 * MODEL_RATE).astype(np.float32)
    streamer = StreamTagger.from_tagger(tagger, input_rate=MODEL_RATE, window_seconds=2.0, hop_seconds=1.0)
    hops = streamer.push(signal)
    assert [hop.time for hop in hops] == [1.0, 2.0, 3.0]
    expected = tagger.infer(signal[MODEL_RATE:], MODEL_RATE).clipwise  # the window of the third hop: [1 s, 3 s]
    np.testing.assert_allclose(hops[2].probabilities, expected, atol=1e-5)
    with pytest.raises(ValueError, match="shortest input"):
        StreamTagger.from_tagger(tagger, input_rate=MODEL_RATE, window_seconds=0.5, hop_seconds=0.25)


# ---- panns-tag --stream ------------------------------------------------------------------------
def run_tag(capsys, monkeypatch, stdin: bytes, *args: object) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = tag.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_tags_a_wav_stream_from_stdin_as_json_lines(capsys, monkeypatch) -> None:
    wav = piped_wav(burst(16000, 0.5, 1.0, 1.5), 16000)  # 3 s at 16 kHz: resampled to the model's 8 kHz
    args = ["--stream", "-", "--checkpoint", cnn6_checkpoint(), "--jsonl", "--hop", 0.5, "--every", 1.0]
    code, out, err = run_tag(capsys, monkeypatch, wav, *args, "--top-k", 2, "--onset", 0, "--offset", 0)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    start, end = records[0], records[-1]
    assert start["type"] == "start" and start["input"] == "wav s16le, mono, 16000 Hz" and start["hop_s"] == 0.5
    assert end["type"] == "end" and end["time"] == 3.0 and end["hops"] == 6 and end["rtf"] > 0
    tops = [r for r in records if r["type"] == "top"]
    assert [r["time"] for r in tops] == [1.0, 2.0, 3.0]  # every 2 hops
    assert all(len(r["top"]) == 2 and r["top"][0]["label"] in LABEL_NAMES for r in tops)
    onsets = [r for r in records if r["type"] == "onset"]
    offsets = [r for r in records if r["type"] == "offset"]
    # thresholds 0: every class starts at the first hop and is closed when the stream ends
    assert sorted(r["label"] for r in onsets) == sorted(LABEL_NAMES) and {r["time"] for r in onsets} == {0.0}
    assert {(r["time"], r["onset"], r["duration"]) for r in offsets} == {(3.0, 0.0, 3.0)} and len(offsets) == 5
    assert end["events"] == 10


def test_cli_reports_a_cut_off_raw_stream_after_closing_its_events(capsys, monkeypatch) -> None:
    raw = s16le(np.zeros(MODEL_RATE, dtype=np.float32)) + b"\x00"
    args = [
        "--stream",
        "-",
        "--checkpoint",
        cnn6_checkpoint(),
        "--stdin-format",
        "s16le",
        "--stdin-rate",
        MODEL_RATE,
        "--onset",
        0,
        "--onset-hops",
        1,
    ]
    code, out, err = run_tag(capsys, monkeypatch, raw, *args)
    assert code == 1
    assert "stdin: ended with 1 stray byte" in err and "end of stream at 1.00 s" in err
    assert len([line for line in out.splitlines() if " offset " in line]) == len(LABEL_NAMES)


def test_cli_reads_a_named_file_and_rejects_an_empty_stream(capsys, monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, burst(MODEL_RATE, 0.5, 0.5, 0.5), MODEL_RATE, subtype="PCM_16")
    code, out, err = run_tag(
        capsys, monkeypatch, b"", "--stream", path, "--checkpoint", cnn6_checkpoint(), "--top-k", 1
    )
    assert code == 0, err
    tops = [line for line in out.splitlines() if " top " in line]
    assert [line.split()[0] for line in tops] == ["1.00", "1.50"]  # the last hop is the partial one at the end
    assert f"tagging {path} (wav s16le, mono, 8000 Hz)" in err
    empty = ["--stream", "-", "--checkpoint", cnn6_checkpoint(), "--stdin-format", "s16le", "--stdin-rate", MODEL_RATE]
    code, _, err = run_tag(capsys, monkeypatch, b"", *empty)
    assert code == 1 and "stdin: empty stream (no samples)" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["a.wav", "--stream", "-"], "give no audio files"),
        (["--jsonl"], "--jsonl needs --stream"),
        (["--stream", "-", "--sed", "out"], "--sed does not apply to --stream"),
        (["--stream", "-", "--onset", "1.5"], "probability in [0, 1]"),
        (["--stream", "-", "--hop", "0"], "positive number of seconds"),
        ([], "give audio files, or --stream -"),
    ],
)
def test_cli_usage_errors(capsys, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tag.main([*args, "--checkpoint", "missing.ckpt"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_cli_every_must_be_whole_hops(capsys, monkeypatch) -> None:
    args = ["--stream", "-", "--checkpoint", cnn6_checkpoint(), "--hop", 0.5, "--every", 0.7]
    code, _, err = run_tag(capsys, monkeypatch, b"", *args)
    assert code == 2 and "--every must be a whole number of hops (0.5 s), got 0.7 s" in err


@pytest.mark.slow
def test_cli_through_a_real_pipe(tmp_path: Path) -> None:
    """``cat file.raw | panns-tag --stream - ...`` in a shell: lines parse, times advance by the hop."""
    raw = tmp_path / "burst.raw"
    raw.write_bytes(s16le(burst(MODEL_RATE, 1.0, 1.0, 1.0)))
    command = (
        f"cat {shlex.quote(str(raw))} | {shlex.quote(sys.executable)} -m panns_lightning.cli.tag --stream - "
        f"--checkpoint {shlex.quote(str(cnn6_checkpoint()))} --stdin-rate {MODEL_RATE} --hop 0.5 --top-k 3"
    )
    env = {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no RIFF header, reading raw s16le, mono, 8000 Hz" in result.stderr
    assert "end of stream at 3.00 s: 6 hops" in result.stderr and "real-time factor" in result.stderr
    tops = [line.split() for line in result.stdout.splitlines() if " top " in line]
    assert [float(fields[0]) for fields in tops] == [0.5 * k for k in range(1, 7)]
    assert all(fields[1] == "s" and fields[2] == "top" and fields[3:].count("|") == 2 for fields in tops)
