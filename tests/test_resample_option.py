"""``--resample decimate``: upstream PANNs' 16/8 kHz audio (32 kHz, then every k-th sample), as an option."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning import audio
from panns_lightning.cli import prepare
from panns_lightning.shardset import ClipRecord, read_manifest
from panns_lightning.shardset.codec import encode_int16
from panns_lightning.shardset.writer import write_shards

LABELS = [{"index": 0, "mid": "/m/a", "name": "a"}]


def noise_with_a_high_tone(sample_rate: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 12000 * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("source_rate", [32000, 44100])
@pytest.mark.parametrize("target_rate", [16000, 8000])
def test_decimate_is_exactly_every_kth_sample_of_the_32k_clip(
    tmp_path: Path, source_rate: int, target_rate: int
) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, noise_with_a_high_tone(source_rate, 0.5), source_rate, subtype="FLOAT")
    step = 32000 // target_rate
    at_32k = audio.load_audio(path, 32000, clip_samples=16000)  # sinc to 32 kHz (a no-op from 32 kHz)
    decimated = audio.load_audio(path, target_rate, clip_samples=16000 // step, resample_method="decimate")
    assert decimated.dtype == np.float32 and decimated.shape == (16000 // step,)
    np.testing.assert_array_equal(decimated, at_32k[0::step])
    if source_rate == 32000:
        np.testing.assert_array_equal(decimated, sf.read(path, dtype="float32")[0][0::step])


def test_decimate_aliases_what_sinc_filters_out(tmp_path: Path) -> None:
    # A 12 kHz tone is above 8 kHz (16 kHz Nyquist): sinc removes it, decimation folds it to 4 kHz.
    path = tmp_path / "tone.wav"
    t = np.arange(32000) / 32000
    sf.write(path, (0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32), 32000, subtype="FLOAT")
    sinc = audio.load_audio(path, 16000)
    decimated = audio.load_audio(path, 16000, resample_method="decimate")
    assert len(sinc) == len(decimated) == 16000
    assert np.sqrt(np.mean(sinc[1000:-1000] ** 2)) < 0.01
    assert np.sqrt(np.mean(decimated**2)) > 0.3


def test_decimate_needs_a_divisor_of_32k_and_unknown_methods_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, noise_with_a_high_tone(16000, 0.1), 16000)
    with pytest.raises(ValueError, match="must divide 32000.*got 22050"):
        audio.load_audio(path, 22050, resample_method="decimate")
    with pytest.raises(ValueError, match="must divide 32000"):
        audio.decimation_step(48000)
    assert audio.decimation_step(32000) == 1 and audio.decimation_step(8000) == 4
    with pytest.raises(ValueError, match="resample_method must be one of"):
        audio.load_audio(path, 16000, resample_method="linear")


def test_the_writer_stores_decimated_audio_and_records_the_method(tmp_path: Path) -> None:
    source = tmp_path / "clip.wav"
    sf.write(source, noise_with_a_high_tone(44100, 0.3), 44100, subtype="FLOAT")
    options = dict(
        sample_rate=16000, clip_samples=4000, labels=LABELS, dataset="t", split="train", num_workers=0, progress=False
    )
    manifest = write_shards([ClipRecord("c", source, (0,))], tmp_path / "dec", resample="decimate", **options)
    assert manifest.extra["resample"] == "decimate"
    assert json.loads((tmp_path / "dec" / "manifest.json").read_text())["resample"] == "decimate"
    assert read_manifest(tmp_path / "dec").resample_method == "decimate"
    with tarfile.open(tmp_path / "dec" / manifest.shards[0].name) as tar:
        stored = np.load(io.BytesIO(tar.extractfile("c.npy").read()))
    expected = encode_int16(audio.load_audio(source, 32000, clip_samples=8000)[0::2])
    np.testing.assert_array_equal(stored, expected)

    default = write_shards([ClipRecord("c", source, (0,))], tmp_path / "sinc", **options)
    assert read_manifest(tmp_path / "sinc").resample_method == "sinc" and default.extra["resample"] == "sinc"
    with pytest.raises(ValueError, match="must divide 32000"):
        write_shards(
            [ClipRecord("c", source, (0,))], tmp_path / "bad", resample="decimate", **{**options, "sample_rate": 22050}
        )
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("command", ["audioset", "esc50", "gtzan", "ravdess"])
def test_every_converter_offers_resample_and_refuses_an_impossible_decimation(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if command == "audioset":
        (tmp_path / "s.csv").write_text("#\n")
        (tmp_path / "l.csv").write_text("index,mid,display_name\n0,/m/a,A\n")
        source = [
            "--segments",
            str(tmp_path / "s.csv"),
            "--labels",
            str(tmp_path / "l.csv"),
            "--audio-dir",
            str(tmp_path),
        ]
    else:
        source = ["--root", str(tmp_path)]
    args = prepare.build_parser().parse_args(
        [command, *source, "--out", str(tmp_path / "out"), "--resample", "decimate"]
    )
    assert args.resample == "decimate"
    assert (
        prepare.main(
            [command, *source, "--out", str(tmp_path / "out"), "--resample", "decimate", "--sample-rate", "22050"]
        )
        == 2
    )
    assert "--resample decimate" in capsys.readouterr().err
