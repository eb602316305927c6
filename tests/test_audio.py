"""audio.py: decode every container libsndfile reads, downmix, resample, crop/pad (the shard codec: test_codec.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.audio import AudioDecodeError, load_audio

FORMATS = [
    ("wav", "WAV", "PCM_16"),
    ("flac", "FLAC", "PCM_16"),
    ("ogg", "OGG", "VORBIS"),
    ("mp3", "MP3", "MPEG_LAYER_III"),
    ("au", "AU", "PCM_16"),
]


def tone(frequency: float, sample_rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sample_rate * seconds))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sample_rate)[spectrum.argmax()])


@pytest.mark.parametrize("extension,container,subtype", FORMATS)
def test_every_container_decodes_to_mono_float_at_target_rate(
    tmp_path: Path, extension: str, container: str, subtype: str
) -> None:
    path = tmp_path / f"clip.{extension}"
    sf.write(path, tone(1000, 22050, 0.5), 22050, format=container, subtype=subtype)
    x = load_audio(path, 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    # lossy codecs pad a little at the ends, so allow a few ms around 0.5 s
    assert abs(len(x) - 8000) < 0.02 * 16000
    assert abs(dominant_frequency(x, 16000) - 1000) < 20


def test_stereo_is_downmixed_by_mean(tmp_path: Path) -> None:
    left = tone(500, 8000, 0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 8000), left / 2, atol=1e-6)


def test_resampling_keeps_pitch_and_duration() -> None:
    buffer = io.BytesIO()
    sf.write(buffer, tone(440, 44100, 1.0), 44100, format="WAV", subtype="FLOAT")
    x = load_audio(buffer.getvalue(), 16000)
    assert len(x) == 16000
    assert abs(dominant_frequency(x, 16000) - 440) < 2
    assert 0.45 < np.abs(x[2000:-2000]).max() < 0.55


def test_clip_samples_pads_short_and_crops_long(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, tone(300, 8000, 0.1), 8000, subtype="FLOAT")
    padded = load_audio(path, 8000, clip_samples=2000)
    assert len(padded) == 2000 and np.all(padded[800:] == 0) and np.abs(padded[:800]).max() > 0.4
    cropped = load_audio(path, 8000, clip_samples=100)
    np.testing.assert_allclose(cropped, tone(300, 8000, 0.1)[:100], atol=1e-6)


def test_long_file_reads_only_the_needed_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(8000 * 60, dtype=np.float32), 8000, subtype="PCM_16")  # one minute
    requested: list[int] = []
    real_read = sf.SoundFile.read

    def spying_read(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spying_read)
    x = load_audio(path, 16000, clip_samples=16000)
    assert len(x) == 16000
    assert requested and 0 < requested[0] < 8000 * 2  # about one second of source frames, not sixty


def test_offset_reads_from_the_middle(tmp_path: Path) -> None:
    ramp = np.linspace(-0.9, 0.9, 8000, dtype=np.float32)
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 8000, 10, offset_seconds=0.5), ramp[4000:4010], atol=1e-6)


def test_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 8000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wave file" * 10)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, subtype="FLOAT")
    cases = {empty: "empty", corrupt: "cannot decode", nan: "non-finite", tmp_path / "missing.wav": "not found"}
    for path, fragment in cases.items():
        with pytest.raises(AudioDecodeError) as caught:
            load_audio(path, 8000)
        assert caught.value.path == str(path)
        assert fragment in caught.value.reason
        assert str(path) in str(caught.value)
