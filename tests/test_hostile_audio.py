"""Converters against hostile audio: every bad file skipped with its reason, every good one converted.

The same fuzzed corpus (0-byte, truncated WAV/FLAC/MP3/OGG, text named .wav, NaN/inf, 1 sample,
silence, 8 channels, 8 kHz / 96 kHz, a 5-minute file, unicode and space names, a duplicate id)
goes through ``panns-prepare audioset`` and ``panns-prepare esc50`` in their official layouts.
Then a conversion is SIGKILLed mid-run: only complete shards may remain, no manifest, and a rerun
refuses (naming the directory and --overwrite) until --overwrite replaces everything.
Policies: docs/fault_tolerance.md, "Converters and hostile audio".
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from panns_lightning import audio
from panns_lightning.cli import prepare
from panns_lightning.shardset import ClipRecord, ManifestError, read_manifest, shard_key
from panns_lightning.shardset.codec import decode_waveform
from panns_lightning.shardset.format import SILENT_MANIFEST_KEY
from panns_lightning.shardset.writer import write_shards

RATE = 16000  # target rate: 8 kHz files are upsampled, 96 kHz ones downsampled
CLIP_SECONDS = 0.5
CLIP = int(RATE * CLIP_SECONDS)
LONG_SECONDS = 300  # 5 minutes at 16 kHz: 9.6 MB that must not be read whole
TONE_HZ = 1000.0


@dataclass(frozen=True)
class Hostile:
    """One corpus file: its id (AudioSet YTID / ESC-50 file stem), how to write it, and the expected outcome."""

    clip_id: str
    extension: str
    write: Callable[[Path], None]
    reason: str | None = None  # a fragment of the expected skip reason; None: must be converted


def tone(rate: int, seconds: float, frequency: float = TONE_HZ, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def written(data: np.ndarray, rate: int, container: str = "WAV", subtype: str = "PCM_16") -> Callable[[Path], None]:
    return lambda path: sf.write(path, data, rate, format=container, subtype=subtype)


def truncated(data: np.ndarray, rate: int, container: str, subtype: str, keep: float = 0.5) -> Callable[[Path], None]:
    """A valid file cut to ``keep`` of its bytes, as an interrupted download leaves it."""

    def write(path: Path) -> None:
        buffer = io.BytesIO()
        sf.write(buffer, data, rate, format=container, subtype=subtype)
        path.write_bytes(buffer.getvalue()[: int(len(buffer.getvalue()) * keep)])

    return write


def eight_channels() -> np.ndarray:
    return np.stack([tone(RATE, CLIP_SECONDS, 300 + 100 * c, 0.1) for c in range(8)], axis=1)


def long_file(path: Path) -> None:
    """5 minutes: a recognisable first second, then noise (cheap to write in blocks)."""
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as f:
        f.write(tone(RATE, 1.0, 440.0))
        noise = np.random.default_rng(1).uniform(-0.2, 0.2, RATE * 10).astype(np.float32)
        for _ in range(LONG_SECONDS // 10):
            f.write(noise)


def hostile_corpus() -> list[Hostile]:
    nan = tone(RATE, CLIP_SECONDS)
    nan[100] = np.nan
    inf = tone(RATE, CLIP_SECONDS)
    inf[200] = np.inf
    return [
        # bad files: each must be skipped with this reason
        Hostile("zero_bytes", ".wav", lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        Hostile(
            "text_named_wav",
            ".wav",
            lambda p: p.write_text("id,label\nthis is not audio\n" * 20),
            "cannot decode: Format not recognised",
        ),
        Hostile(
            "truncated_wav",
            ".wav",
            truncated(tone(RATE, 1.0), RATE, "WAV", "PCM_16"),
            "truncated: header says 16000 frames, got",
        ),
        Hostile(
            "truncated_flac",
            ".flac",
            truncated(tone(RATE, 1.0), RATE, "FLAC", "PCM_16"),
            "truncated or corrupt: header says 16000 frames",
        ),
        Hostile(
            "truncated_mp3",
            ".mp3",
            truncated(tone(8000, 1.0), 8000, "MP3", "MPEG_LAYER_III", keep=0.4),
            "truncated: header says 8000 frames, got",
        ),
        Hostile(
            "truncated_ogg",
            ".ogg",
            truncated(tone(RATE, 1.0), RATE, "OGG", "VORBIS"),
            "cannot decode: Supported file format but file is malformed",
        ),
        Hostile("nan_samples", ".wav", written(nan, RATE, subtype="FLOAT"), "contains non-finite samples (NaN or inf)"),
        Hostile("inf_samples", ".wav", written(inf, RATE, subtype="FLOAT"), "contains non-finite samples (NaN or inf)"),
        Hostile("one_sample", ".wav", written(np.array([0.25], np.float32), RATE), "too short: 1 frame at 16000 Hz"),
        # good files: each must be converted
        Hostile("plain", ".wav", written(tone(RATE, CLIP_SECONDS, 440.0), RATE)),
        Hostile("silence", ".wav", written(np.zeros(CLIP, np.float32), RATE)),
        Hostile("eight_channels", ".wav", written(eight_channels(), RATE, subtype="FLOAT")),
        Hostile("rate_8k", ".wav", written(tone(8000, CLIP_SECONDS), 8000)),
        Hostile("rate_96k", ".wav", written(tone(96000, CLIP_SECONDS), 96000)),
        Hostile("five_minutes", ".wav", long_file),
        Hostile("short_but_usable", ".wav", written(tone(RATE, 0.1), RATE)),  # 100 ms: above the minimum, padded
        Hostile("ünïcödé clip ☃", ".wav", written(tone(RATE, CLIP_SECONDS), RATE)),
        Hostile("with spaces in the name", ".flac", written(tone(RATE, CLIP_SECONDS), RATE, "FLAC")),
        Hostile(
            "ü" * 60, ".ogg", written(tone(RATE, CLIP_SECONDS), RATE, "OGG", "VORBIS")
        ),  # 120-byte key: a pax tar name
        Hostile("fine_mp3", ".mp3", written(tone(RATE, CLIP_SECONDS), RATE, "MP3", "MPEG_LAYER_III")),
    ]


GOOD = [h.clip_id for h in hostile_corpus() if h.reason is None]
BAD = {h.clip_id: h.reason for h in hostile_corpus() if h.reason is not None}
DUPLICATED = "plain"  # listed twice in each CSV: the first row is kept
DUPLICATED_ROW = [h.clip_id for h in hostile_corpus()].index(DUPLICATED)  # 0-based data row of its first listing


def write_audioset_layout(root: Path) -> tuple[Path, Path, Path]:
    """``eval_segments.csv`` (AudioSet's 3 comment lines), class_labels_indices.csv and audio in a unicode folder."""
    audio_dir = root / "audio"
    folder = audio_dir / "dl ☃ part 1"
    folder.mkdir(parents=True)
    rows = [
        "# Segments csv created Sun Mar  5 10:54:31 2017",
        f"# num_ytids={len(GOOD) + len(BAD)}, num_segs={len(GOOD) + len(BAD)}, num_unique_labels=2, num_positive_labels=30",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    for position, item in enumerate(hostile_corpus()):
        item.write(folder / f"Y{item.clip_id}{item.extension}")
        rows.append(f'{item.clip_id}, 30.000, 40.000, "{"/m/a" if position % 2 else "/m/a,/m/b"}"')
    rows.append(f'{DUPLICATED}, 50.000, 60.000, "/m/b"')
    segments = root / "eval_segments.csv"
    segments.write_text("\n".join(rows) + "\n", encoding="utf-8")
    labels = root / "class_labels_indices.csv"
    labels.write_text('index,mid,display_name\n0,/m/a,"Speech"\n1,/m/b,"Dog"\n', encoding="utf-8")
    return segments, audio_dir, labels


def write_esc50_layout(root: Path) -> Path:
    """``meta/esc50.csv`` + ``audio/``; file names are the corpus ids (the reader takes any name)."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for position, item in enumerate(hostile_corpus()):
        name = f"{item.clip_id}{item.extension}"
        item.write(root / "audio" / name)
        target = position % 2
        rows.append(f"{name},{position % 5 + 1},{target},{('dog', 'rain')[target]},True,{position}.wav,A")
    rows.append(f"{DUPLICATED}.wav,3,1,rain,True,99.wav,B")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def stored_clips(out: Path) -> dict[str, np.ndarray]:
    """Every clip in the manifest's shards, decoded, by tar member key."""
    manifest = read_manifest(out)
    clips: dict[str, np.ndarray] = {}
    for path in manifest.shard_paths():
        with tarfile.open(path) as tar:
            for member in tar:
                key, extension = member.name.split(".", 1)
                if extension in ("npy", "flac"):
                    clips[key] = decode_waveform(
                        tar.extractfile(member).read(),
                        storage=manifest.storage,
                        sample_rate=manifest.sample_rate,
                        clip_samples=manifest.clip_samples,
                    )
    return clips


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def check_conversion(out: Path, duplicate_reason: str) -> None:
    """The acceptance checks shared by both layouts."""
    manifest = read_manifest(out)
    assert manifest.num_clips == len(GOOD)
    clips = stored_clips(out)
    assert sorted(clips) == sorted(shard_key(clip_id) for clip_id in GOOD)
    assert all(x.shape == (CLIP,) for x in clips.values())

    skips = [(entry.key, entry.reason) for entry in manifest.skipped]
    assert manifest.num_skipped == len(BAD) + 1 == len(skips)
    for clip_id, fragment in BAD.items():
        reasons = [reason for key, reason in skips if key == clip_id]
        assert len(reasons) == 1 and fragment in reasons[0], (clip_id, reasons)
    assert [reason for key, reason in skips if key == DUPLICATED][0].startswith(duplicate_reason)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    assert manifest.extra[SILENT_MANIFEST_KEY] == ["silence"]
    assert not clips["silence"].any()
    np.testing.assert_allclose(clips["eight_channels"], eight_channels().mean(axis=1), atol=1 / 32767)
    np.testing.assert_allclose(clips["five_minutes"], tone(RATE, CLIP_SECONDS, 440.0), atol=2 / 32767)
    for resampled in ("rate_8k", "rate_96k"):
        assert abs(dominant_frequency(clips[resampled], RATE) - TONE_HZ) < 10
        assert 0.4 < np.abs(clips[resampled][2000:6000]).max() < 0.6
    short = clips["short_but_usable"]
    assert np.abs(short[:1500]).max() > 0.4 and not short[1700:].any()


def test_audioset_layout_hostile_corpus(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    segments, audio_dir, labels = write_audioset_layout(tmp_path / "AudioSet")
    out = tmp_path / "shards"
    code = prepare.main(
        ["audioset", "--segments", str(segments), "--audio-dir", str(audio_dir), "--labels", str(labels), "--out", str(out),
         "--sample-rate", str(RATE), "--clip-seconds", str(CLIP_SECONDS), "--min-shards", "3", "--workers", "2", "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    check_conversion(out, f"duplicate YTID, first seen on line {4 + DUPLICATED_ROW}")  # after 3 comment lines
    printed = capsys.readouterr().out
    assert f"wrote {len(GOOD)} clips" in printed and f"skipped {len(BAD) + 1} clips" in printed

    # the training reader gets every good clip back, unicode and 120-byte keys included
    from panns_lightning.data import AudioShardDataModule

    datamodule = AudioShardDataModule(
        str(out), str(out), str(out), batch_size=4, num_workers=0, balanced=False, steps_per_epoch=2, shuffle_buffer=8
    )
    datamodule.set_rank(0, 1)
    assert sorted(k for batch in datamodule.test_dataloader() for k in batch["key"]) == sorted(
        shard_key(c) for c in GOOD
    )


def test_esc50_layout_hostile_corpus_reads_only_the_frames_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    root = write_esc50_layout(tmp_path / "ESC-50-master")
    requested: dict[str, int] = {}
    real_read = sf.SoundFile.read

    def spying_read(self: sf.SoundFile, frames: int = -1, *args, **kwargs):
        name = Path(str(self.name)).stem
        requested[name] = max(requested.get(name, 0), frames if frames >= 0 else self.frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spying_read)
    out = tmp_path / "shards"
    code = prepare.main(
        ["esc50", "--root", str(root), "--out", str(out), "--sample-rate", str(RATE), "--clip-seconds", str(CLIP_SECONDS),
         "--min-shards", "2", "--workers", "0", "--quiet"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    check_conversion(out, f"duplicate filename, first seen on line {2 + DUPLICATED_ROW}")  # after the header
    # the 5-minute file: one read of about the clip (plus the resampler's margin), never 4.8 M frames
    assert 0 < requested["five_minutes"] < 2 * CLIP
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert sum(manifest["folds"]["num_clips"].values()) == len(GOOD)


def test_streamed_wav_length_placeholder_is_not_truncation(tmp_path: Path) -> None:
    """A WAV written to a pipe keeps 0xFFFFFFFF as its data size: valid, not truncated."""
    path = tmp_path / "streamed.wav"
    sf.write(path, tone(RATE, CLIP_SECONDS), RATE, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at + 4 : at + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert audio.wav_truncation(path) is None
    assert audio.load_audio(path, RATE, CLIP).shape == (CLIP,)
    data[at + 4 : at + 8] = (CLIP * 2 + 2).to_bytes(4, "little")  # one frame more than present
    path.write_bytes(bytes(data))
    assert audio.wav_truncation(path) == (CLIP + 1, CLIP)


@pytest.mark.slow
@pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork", reason="the injected crash reaches workers through fork"
)
def test_a_decoder_that_kills_its_worker_costs_only_that_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "fine.wav"
    sf.write(source, tone(RATE, CLIP_SECONDS), RATE)
    real_load = audio.load_audio

    def load_or_die(path, *args, **kwargs):
        if "crash" in str(path):
            os._exit(70)  # what a segfault in libsndfile / mpg123 does to the worker
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(audio, "load_audio", load_or_die)
    crasher = tmp_path / "crash.wav"
    shutil.copy(source, crasher)
    records = [ClipRecord(f"clip{i}", source, (i % 2,)) for i in range(12)]
    records.insert(5, ClipRecord("crash", crasher, (0,)))
    labels = [{"index": 0, "mid": "a", "name": "a"}, {"index": 1, "mid": "b", "name": "b"}]
    manifest = write_shards(records, tmp_path / "out", sample_rate=RATE, clip_samples=CLIP, labels=labels, dataset="t", split="s",
                            min_shards=2, num_workers=1, progress=False)  # fmt: skip
    assert manifest.num_clips == 12
    assert [(s.key, s.reason) for s in manifest.skipped] == [
        ("crash", "decoder crashed: the worker process died while decoding this file")
    ]


# ---------------------------------------------------------------------------------------------
# SIGKILL mid-run

KILL_CLIPS = 320


def write_many_clip_esc50(root: Path, count: int) -> Path:
    """``count`` ESC-50 rows, all hard links to one 1 s 22.05 kHz file (slow enough to kill, cheap to write)."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    master = root / "master.wav"
    sf.write(master, np.random.default_rng(0).uniform(-0.3, 0.3, 22050).astype(np.float32), 22050, subtype="PCM_16")
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for index in range(count):
        name = f"{index % 5 + 1}-{index}-A-{index % 2}.wav"
        os.link(master, root / "audio" / name)
        rows.append(f"{name},{index % 5 + 1},{index % 2},{('dog', 'rain')[index % 2]},True,{index}.wav,A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def panns_prepare_command() -> list[str]:
    script = shutil.which("panns-prepare", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "panns_lightning.cli.prepare"]


def kill_when_first_shard_is_done(process: subprocess.Popen, out: Path, timeout: float = 90.0) -> None:
    """SIGKILL the converter (only its main process) once a complete shard exists, so the next one is open."""
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline and not list(out.glob("shard-*.tar")):
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def group_outlives_its_leader(group: int, patience: float = 30.0) -> bool:
    """Whether processes of ``group`` (the pool worker) are still there after ``patience`` s; kills them if so."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.05)
    os.killpg(group, signal.SIGKILL)
    return True


def assert_complete_tar(path: Path, sample_rate: int, clip_samples: int) -> int:
    """Every member readable to its end, audio and json paired, audio of full length; returns clips."""
    audio_keys, json_keys = set(), set()
    with tarfile.open(path) as tar:
        for member in tar:
            key, extension = member.name.split(".", 1)
            payload = tar.extractfile(member).read()
            assert len(payload) == member.size
            if extension == "json":
                json.loads(payload)
                json_keys.add(key)
            else:
                storage = {"npy": "int16", "flac": "flac"}[extension]
                waveform = decode_waveform(payload, storage=storage, sample_rate=sample_rate, clip_samples=clip_samples)
                assert waveform.shape == (clip_samples,)
                audio_keys.add(key)
    assert audio_keys == json_keys and audio_keys
    return len(audio_keys)


@pytest.mark.slow
def test_sigkill_mid_run_leaves_only_complete_shards_and_rerun_refuses_then_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = write_many_clip_esc50(tmp_path / "ESC-50-master", KILL_CLIPS)
    out = tmp_path / "shards"
    layout = ["--root", str(root), "--out", str(out), "--clips-per-shard", "8", "--min-shards", "1", "--quiet"]
    first_run = [*layout, "--sample-rate", "32000", "--clip-seconds", "5", "--storage", "flac"]
    log = (tmp_path / "killed.log").open("w")
    process = subprocess.Popen(
        [*panns_prepare_command(), "esc50", *first_run, "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    kill_when_first_shard_is_done(process, out)
    log.close()
    assert process.returncode == -signal.SIGKILL, (
        f"the conversion was not killed mid-run: {(tmp_path / 'killed.log').read_text()}"
    )
    assert not group_outlives_its_leader(process.pid), "the orphaned pool worker did not exit with its parent"

    # what the kill left: complete shards, at most temp-named files, and no manifest
    names = sorted(p.name for p in out.iterdir())
    shards = [name for name in names if re.fullmatch(r"shard-\d{6}\.tar", name)]
    assert shards and all(re.fullmatch(r"shard-\d{6}\.tar(\.tmp)?", name) for name in names), names
    assert sum(assert_complete_tar(out / name, 32000, 5 * 32000) for name in shards) < KILL_CLIPS
    with pytest.raises(ManifestError, match="incomplete conversion"):
        read_manifest(out)

    # the same command again refuses, in one line naming the directory and the way out
    capsys.readouterr()
    assert prepare.main(["esc50", *first_run, "--workers", "0"]) == prepare.EXIT_USAGE
    message = capsys.readouterr().err.strip()
    assert (
        "\n" not in message and str(out) in message and "interrupted conversion" in message and "--overwrite" in message
    )

    # --overwrite with other options: every file of the killed run is gone, nothing of it is mixed in
    second_run = [*layout, "--sample-rate", "16000", "--clip-seconds", "1", "--storage", "int16"]
    assert prepare.main(["esc50", *second_run, "--workers", "0", "--overwrite"]) == 0
    manifest = read_manifest(out)
    assert manifest.num_clips == KILL_CLIPS and manifest.storage == "int16"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["clip_index.npz", "manifest.json", *(s.name for s in manifest.shards)]
    )
    assert sum(assert_complete_tar(path, 16000, 16000) for path in manifest.shard_paths()) == KILL_CLIPS
