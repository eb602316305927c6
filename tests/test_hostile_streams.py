"""Sizes chosen by audio input are bounded (issue 19, case 6): sample rates, windows, WAV chunks.

The allocation cases run through the real ``panns-tag --stream -`` (a 32 kHz Cnn6 checkpoint, a
real OS pipe as stdin) and ``load_audio`` in one subprocess, each under an RSS check (the peak
resident memory the case adds, from ``VmHWM`` reset before it, below 200 MB) and all under
``ulimit -v 6000000`` (the imports alone reserve 3.9 GB of address space): each must end in exit
code 0, or in one line that says what is wrong, never in ``MemoryError`` or a traceback. The resampler's polyphase
path is checked against torchaudio's filter; common rate pairs stay torchaudio's bit for bit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT

from panns_lightning import audio, input_limits
from panns_lightning.live.pcm import StreamFormatError, open_pcm_stream
from panns_lightning.live.resample import StreamResampler
from panns_lightning.polyphase import PolyphaseStream, polyphase_resample

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT_KB = 6_000_000
"""``ulimit -v``: the imports of ``panns-tag`` (torch, Lightning) alone reserve 3.9 GB of address space."""
MAX_CASE_RSS_MB = 200
"""The RSS check: resident memory one case may add (loading the checkpoint and a 2 s window take ~60 MB)."""
MODEL_RATE = 32000


def wav_header(rate: int, *, fmt_size: int = 16, channels: int = 1) -> bytes:
    """A 16-bit WAV stream header as ffmpeg writes it to a pipe (sizes unknown)."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate % (1 << 32), (rate * 2) % (1 << 32), 2, 16)
    riff = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
    if fmt_size != 16:
        return riff + b"fmt " + struct.pack("<I", fmt_size) + fmt
    return riff + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 0xFFFFFFFF)


def tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def s16(signal: np.ndarray) -> bytes:
    return (signal * 32767).round().astype("<i2").tobytes()


# (name, stdin bytes, extra panns-tag arguments)
STREAM_CASES = [
    ("wav 44101 Hz", wav_header(44101) + s16(tone(44101, 1.0)), []),
    ("raw --stdin-rate 16001", s16(tone(16001, 1.0)), ["--stdin-format", "s16le", "--stdin-rate", "16001"]),
    ("wav 1000003 Hz", wav_header(1_000_003) + s16(tone(8000, 1.0)), []),
    (
        "raw --stdin-rate 1099511627776",
        s16(tone(8000, 1.0)),
        ["--stdin-format", "s16le", "--stdin-rate", "1099511627776"],
    ),
    ("--window 1e9", s16(tone(MODEL_RATE, 1.0)), ["--stdin-format", "s16le", "--window", "1e9"]),
    ("fmt chunk of 0xFFFFFFF0 bytes", wav_header(32000, fmt_size=0xFFFFFFF0) + bytes(64), []),
]


@pytest.mark.slow
def test_allocation_cases_end_in_one_line_under_a_memory_limit(tmp_path: Path) -> None:
    _write_checkpoint(tmp_path / "cnn6_32k.ckpt")  # here: the driver under the limit imports no training code
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}",
        "OMP_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
    }
    command = f"ulimit -v {MEMORY_LIMIT_KB} && exec {sys.executable} {__file__} {tmp_path}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {
        "wav 44101 Hz": (0, "panns-tag: end of stream at 1.00 s: 2 hops"),
        "raw --stdin-rate 16001": (0, "panns-tag: end of stream at 1.00 s: 2 hops"),
        "wav 1000003 Hz": (
            1,
            "panns-tag: stdin: the WAV header's sample rate is 1000003 Hz, outside the supported 1000..384000 Hz; "
            "set PANNS_MAX_SAMPLE_RATE to accept more",
        ),
        "raw --stdin-rate 1099511627776": (
            2,
            "panns-tag: error: --stdin-rate is 1099511627776 Hz, outside the supported 1000..384000 Hz; "
            "set PANNS_MAX_SAMPLE_RATE to accept more",
        ),
        "--window 1e9": (2, "panns-tag: error: --window must be at most 60 seconds, got 1e+09"),
        "fmt chunk of 0xFFFFFFF0 bytes": (
            1,
            "panns-tag: stdin: WAV 'fmt ' chunk claims 4294967280 bytes (at most 4096): not a WAV stream",
        ),
        "file at 44101 Hz": (0, "320000 samples"),
        "file at 1000003 Hz": (
            1,
            "sample rate is 1000003 Hz, outside the supported 1000..384000 Hz; set PANNS_MAX_SAMPLE_RATE to accept more",
        ),
    }
    assert results["warm-up"]["code"] == 0, results["warm-up"]
    for name, (code, line) in expected.items():
        got = results[name]
        assert got["code"] == code and line in got["last_line"], (name, got)
        assert "Traceback" not in got["stderr"], (name, got["stderr"][-2000:])
        assert got["peak_rss_added_mb"] < MAX_CASE_RSS_MB, (name, got["peak_rss_added_mb"])


def test_common_rate_pairs_stay_torchaudios_result_bit_for_bit() -> None:
    signal = np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    for source, target in ((44100, 32000), (48000, 32000), (22050, 16000), (11025, 32000), (32000, 44100)):
        assert audio.uses_torchaudio(*audio.resample_ratio(source, target))
        expected = AF.resample(torch.from_numpy(signal[: source // 2]), source, target).numpy()
        np.testing.assert_array_equal(audio.resample(signal[: source // 2], source, target), expected)


@pytest.mark.parametrize("source, target", [(47952, 32000), (32000, 47952)])
def test_polyphase_path_is_torchaudios_filter_at_the_exact_ratio(source: int, target: int) -> None:
    """Pairs whose torchaudio kernel is over the limit but still buildable here (6 M taps for 47952 → 32000)."""
    up, down = audio.resample_ratio(source, target)
    assert not audio.uses_torchaudio(up, down)
    signal = np.random.default_rng(1).standard_normal(source // 4).astype(np.float32)
    reference = AT.Resample(source, target, dtype=torch.float64)(torch.from_numpy(signal).double()).numpy()
    result = audio.resample(signal, source, target)
    assert result.shape == reference.shape and result.dtype == np.float32
    np.testing.assert_allclose(result, reference, atol=2e-6)  # torchaudio's own float32 kernel is 5e-4 away


def test_polyphase_stream_equals_the_whole_signal_and_edge_lengths() -> None:
    rng = np.random.default_rng(2)
    signal = rng.standard_normal(44101 * 2 + 7).astype(np.float32)
    whole = audio.resample(signal, 44101, 32000)
    assert whole.shape[0] == -(-signal.shape[0] * 32000 // 44101)
    for resampler in (StreamResampler(44101, 32000), PolyphaseStream(32000, 44101)):
        parts, start = [], 0
        while start < signal.shape[0]:
            size = int(rng.integers(1, 5000))
            parts.append(resampler.push(signal[start : start + size]))
            start += size
        parts.append(resampler.finish())
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    for length in (0, 1, 2, 40):
        assert polyphase_resample(np.ones(length, np.float32), 32000, 44101).shape[0] == -(-length * 32000 // 44101)


def test_sample_rate_range_and_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert input_limits.sample_rate_range() == (1000, 384000)
    for rate in (999, 384001, 1099511627776, 0, -8000):
        with pytest.raises(input_limits.SampleRateError, match="outside the supported 1000..384000 Hz"):
            input_limits.check_sample_rate(rate, "rate")
    with pytest.raises(input_limits.SampleRateError, match="not a whole number"):
        input_limits.check_sample_rate(44100.5, "rate")
    monkeypatch.setenv("PANNS_MAX_SAMPLE_RATE", "768000")
    assert input_limits.check_sample_rate(500000, "rate") == 500000
    monkeypatch.setenv("PANNS_MAX_SAMPLE_RATE", "1e12")
    with pytest.raises(input_limits.SampleRateError, match="PANNS_MAX_SAMPLE_RATE='1e12' is not a whole number"):
        input_limits.check_sample_rate(32000, "rate")


def test_stream_header_limits_are_one_line_errors() -> None:
    with pytest.raises(StreamFormatError, match="WAV header with 4096 channels"):
        open_pcm_stream(io.BytesIO(wav_header(32000, channels=4096)))
    with pytest.raises(StreamFormatError, match="channel count must be 1..1024"):
        open_pcm_stream(io.BytesIO(b"\0\0"), sample_format="s16le", sample_rate=8000, channels=5000)
    skipped = wav_header(8000)[:12] + b"LIST" + struct.pack("<I", 0x7FFFFFFF)
    with pytest.raises(StreamFormatError, match="2147483647-byte b'LIST' chunk before the samples"):
        open_pcm_stream(io.BytesIO(skipped))


def test_a_file_at_an_unsupported_rate_is_a_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "ultra.wav"
    sf.write(path, np.zeros(1000, np.float32), 500000)
    with pytest.raises(audio.AudioDecodeError, match="500000 Hz, outside the supported"):
        audio.load_audio(path, 32000, 32000)


# ---- the subprocess ------------------------------------------------------------------------------


def _driver(folder: Path) -> None:
    """Run every case; print one JSON line of ``{case: {code, last_line, stderr}}`` and the peak RSS."""
    from panns_lightning.cli import tag

    checkpoint = folder / "cnn6_32k.ckpt"
    warm_up = ["--stream", "-", "--checkpoint", str(checkpoint), "--hop", "0.5"]  # the lazy imports: not a case's cost
    results: dict[str, object] = {"warm-up": _run_cli(tag.main, wav_header(44100) + s16(tone(44100, 1.0)), warm_up)}
    for name, data, extra in STREAM_CASES:
        results[name] = _run_cli(
            tag.main, data, ["--stream", "-", "--checkpoint", str(checkpoint), "--hop", "0.5", *extra]
        )
    for rate in (44101, 1_000_003):
        path = folder / f"clip_{rate}.wav"
        sf.write(path, tone(8000, 1.0), 8000)  # then claim another rate in the header
        header = bytearray(path.read_bytes())
        header[24:28] = struct.pack("<I", rate)
        path.write_bytes(bytes(header))
        results[f"file at {rate} Hz"] = _run_cli(lambda _, path=path: _load(path), b"", [])
    results["peak_address_space_mb"] = _status_kb("VmPeak") / 1024
    print(json.dumps(results))


def _write_checkpoint(path: Path) -> None:
    """A 5-class Cnn6 Lightning checkpoint at 32 kHz (32 mel bins keep it small)."""
    from panns_lightning.training.module import TaggingModule
    from test_inference_support import LABELS

    torch.manual_seed(0)
    frontend = dict(sample_rate=MODEL_RATE, window_size=1024, hop_size=320, mel_bins=32, fmin=50, fmax=14000)
    module = TaggingModule({"name": "Cnn6", **frontend}, LABELS)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)


def _load(path: Path) -> int:
    try:
        samples = audio.load_audio(path, MODEL_RATE, 10 * MODEL_RATE)
    except audio.AudioDecodeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{samples.shape[0]} samples", file=sys.stderr)
    return 0


def _run_cli(main, data: bytes, argv: list[str]) -> dict[str, object]:
    """``main(argv)`` with ``data`` on a real OS pipe as stdin; its exit code, stderr and peak RSS added."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the peak below is this case's own
    resident = _status_kb("VmRSS")
    read_end, write_end = os.pipe()

    def feed() -> None:
        with open(write_end, "wb") as sink, contextlib.suppress(BrokenPipeError):
            sink.write(data)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    stdin, stderr = sys.stdin, io.StringIO()
    sys.stdin = io.TextIOWrapper(open(read_end, "rb"))
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exit_info:
                code = exit_info.code
            except BaseException as error:  # what main's code does: recorded, so the test can show it
                import traceback

                traceback.print_exc()
                code = f"{type(error).__name__}"
    finally:
        sys.stdin.close()
        sys.stdin = stdin
    text = stderr.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    added_mb = (_status_kb("VmHWM") - resident) / 1024
    return {
        "code": code,
        "last_line": lines[-1] if lines else "",
        "stderr": text[-4000:],
        "peak_rss_added_mb": added_mb,
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    _driver(Path(sys.argv[1]))
