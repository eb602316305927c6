"""shardset/: one writer for every dataset — formats, skip report, stratification, atomicity, manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.shardset import ClipRecord, Manifest, ManifestError, SkippedClip, codec, read_manifest
from panns_lightning.shardset.codec import decode_waveform
from panns_lightning.shardset.writer import (
    DuplicateKeyError,
    NoUsableClipsError,
    OutputNotEmptyError,
    plan_shards,
    write_shards,
)

RATE = 8000
CLIP = 2000  # 0.25 s at 8 kHz
LABELS = [{"index": i, "mid": f"/m/{i}", "name": f"class {i}"} for i in range(4)]


def tone(frequency: float, sample_rate: int, seconds: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * frequency * np.arange(int(sample_rate * seconds)) / sample_rate)).astype(
        np.float32
    )


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


@pytest.fixture()
def mixed_sources(tmp_path: Path) -> list[ClipRecord]:
    """Five decodable files (rates, channels, containers all differ), one corrupt, one missing."""
    folder = tmp_path / "audio"
    folder.mkdir()
    specs = [
        ("a.wav", 8000, 1, "WAV", "PCM_16", (0,)),
        ("b.flac", 22050, 2, "FLAC", "PCM_16", (1,)),
        ("c.ogg", 16000, 1, "OGG", "VORBIS", (2, 0)),
        ("d.mp3", 11025, 2, "MP3", "MPEG_LAYER_III", (3,)),
        ("e.au", 44100, 1, "AU", "PCM_16", (1, 2)),
    ]
    records = []
    for name, rate, channels, container, subtype, labels in specs:
        x = tone(440, rate, 0.3)
        sf.write(
            folder / name,
            np.stack([x] * channels, axis=1) if channels == 2 else x,
            rate,
            format=container,
            subtype=subtype,
        )
        records.append(
            ClipRecord(name.split(".")[0] + ".clip", folder / name, labels, meta={"fold": len(records)}, source=name)
        )
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 20)
    records.append(ClipRecord("corrupt", folder / "corrupt.wav", (0,), source="corrupt.wav"))
    records.append(ClipRecord("missing", folder / "missing.wav", (1,), source="missing.wav"))
    return records


def convert(records, out: Path, **options) -> Manifest:
    defaults = dict(
        sample_rate=RATE, clip_samples=CLIP, labels=LABELS, dataset="test", split="train", num_workers=0, progress=False
    )
    return write_shards(records, out, **{**defaults, **options})


@pytest.mark.slow
def test_mixed_formats_convert_and_failures_are_reported(mixed_sources: list[ClipRecord], tmp_path: Path) -> None:
    reader_skip = SkippedClip("gone", "eval.csv:7", "audio file not found")
    manifest = convert(mixed_sources, tmp_path / "out", num_workers=2, min_shards=2, skipped=[reader_skip])
    assert manifest.num_clips == 5 and len(manifest.shards) == 2
    assert manifest.class_counts == [2, 2, 2, 1]
    assert manifest.num_skipped == 3
    reasons = {s.key: s.reason for s in manifest.skipped}
    assert reasons["gone"] == "audio file not found"
    assert "cannot decode" in reasons["corrupt"] and reasons["missing"] == "file not found"

    assert read_manifest(tmp_path / "out") == manifest
    members: dict[str, bytes] = {}
    for path in manifest.shard_paths():
        members.update(tar_members(path))
    # keys "a.clip" ...: the member names escape the dot (shard_key), so webdataset sees one extension
    assert sorted(members) == sorted(f"{k}%2Eclip.{ext}" for k in "abcde" for ext in ("npy", "json"))
    info = json.loads(members["c%2Eclip.json"])
    assert info == {"labels": [2, 0], "source": "c.ogg", "fold": 2}
    for key in "abcde":
        waveform = decode_waveform(members[f"{key}%2Eclip.npy"], storage="int16", sample_rate=RATE, clip_samples=CLIP)
        assert waveform.shape == (CLIP,)
        assert 0.4 < np.abs(waveform[200:1800]).max() < 0.6  # mono mean of identical channels keeps the level
        spectrum = np.abs(np.fft.rfft(waveform))
        assert abs(np.fft.rfftfreq(CLIP, 1 / RATE)[spectrum.argmax()] - 440) < 10


def test_flac_storage_holds_the_same_samples_as_int16(mixed_sources: list[ClipRecord], tmp_path: Path) -> None:
    usable = mixed_sources[:5]
    as_int16 = convert(usable, tmp_path / "int16", storage="int16")
    as_flac = convert(usable, tmp_path / "flac", storage="flac")
    assert as_flac.storage == "flac" and as_flac.audio_extension == "flac"
    npy = tar_members(as_int16.shard_paths()[0])
    flac = tar_members(as_flac.shard_paths()[0])
    for key in "abcde":
        np.testing.assert_array_equal(
            decode_waveform(npy[f"{key}%2Eclip.npy"], storage="int16", sample_rate=RATE, clip_samples=CLIP),
            decode_waveform(flac[f"{key}%2Eclip.flac"], storage="flac", sample_rate=RATE, clip_samples=CLIP),
        )


@pytest.mark.slow
def test_same_seed_gives_byte_identical_shards(mixed_sources: list[ClipRecord], tmp_path: Path) -> None:
    first = convert(mixed_sources[:5], tmp_path / "one", min_shards=2, seed=3)
    second = convert(mixed_sources[:5], tmp_path / "two", min_shards=2, seed=3, num_workers=2)
    for a, b in zip(first.shard_paths(), second.shard_paths()):
        assert a.read_bytes() == b.read_bytes()


def test_plan_spreads_every_class_evenly_over_shards() -> None:
    rng = np.random.default_rng(0)
    num_classes, num_shards = 30, 16
    zipf = 1 / np.arange(1, num_classes + 1) ** 1.3
    label_lists = [
        tuple(rng.choice(num_classes, size=rng.integers(1, 4), replace=False, p=zipf / zipf.sum())) for _ in range(3000)
    ]
    plan = plan_shards(label_lists, num_shards, seed=0)
    assert sorted(p for shard in plan for p in shard) == list(range(3000))
    assert max(map(len, plan)) - min(map(len, plan)) <= 1
    totals = Counter(c for labels in label_lists for c in labels)
    for c, total in totals.items():
        per_shard = [sum(c in label_lists[p] for p in shard) for shard in plan]
        if total >= num_shards:
            assert min(per_shard) >= 1, f"class {c} ({total} clips) missing from a shard: {per_shard}"
        # greedy stratification: head classes that only co-occur are balanced too, not just the rarest label
        assert max(per_shard) - min(per_shard) <= 1, (c, per_shard)
    assert plan == plan_shards(label_lists, num_shards, seed=0)
    assert plan != plan_shards(label_lists, num_shards, seed=1)


def test_writer_stratifies_rare_classes_into_every_shard(tmp_path: Path) -> None:
    source = tmp_path / "one.wav"
    sf.write(source, tone(300, RATE, 0.1), RATE)
    counts = {0: 64, 1: 24, 2: 8, 3: 4}
    records = [ClipRecord(f"k{c}_{i}", source, (c,)) for c, n in counts.items() for i in range(n)]
    manifest = convert(records, tmp_path / "out", clips_per_shard=25, multilabel=False)
    assert len(manifest.shards) == 4
    for shard in manifest.shards:
        assert shard.class_counts == [16, 6, 2, 1]


def test_interrupted_conversion_leaves_no_partial_shard_and_no_manifest(
    mixed_sources: list[ClipRecord], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = mixed_sources[0].audio_path
    records = [ClipRecord(f"clip{i}", source, (i % 4,)) for i in range(12)]
    calls = {"n": 0}
    real_encode = codec.encode_member

    def failing_encode(waveform: np.ndarray, **options: object) -> bytes:
        calls["n"] += 1
        if calls["n"] == 7:  # in the middle of the third shard (3 clips per shard)
            raise KeyboardInterrupt
        return real_encode(waveform, **options)

    monkeypatch.setattr(codec, "encode_member", failing_encode)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert(records, out, clips_per_shard=3)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["shard-000000.tar", "shard-000001.tar"]
    for name in names:
        assert len(tar_members(out / name)) == 6
    with pytest.raises(ManifestError, match="incomplete conversion"):
        read_manifest(out)

    monkeypatch.setattr(codec, "encode_member", real_encode)
    with pytest.raises(OutputNotEmptyError, match="--overwrite"):
        convert(records, out, clips_per_shard=3)
    manifest = convert(records, out, clips_per_shard=3, overwrite=True)
    assert manifest.num_clips == 12 and len(manifest.shards) == 4
    shards = [f"shard-00000{i}.tar" for i in range(4)]
    assert sorted(p.name for p in out.iterdir()) == ["clip_index.npz", "manifest.json", *shards]


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from panns_lightning.shardset import ClipRecord, codec
from panns_lightning.shardset.writer import write_shards

source, out, marker = sys.argv[1:]
real_encode = codec.encode_member
count = 0
def slow_encode(x, **options):
    global count
    count += 1
    if count == 5:
        Path(marker).touch()  # two shards done, the third one open
    if count >= 5:
        time.sleep(0.2)
    return real_encode(x, **options)
codec.encode_member = slow_encode
records = [ClipRecord(f"clip{i}", source, (i % 4,)) for i in range(40)]
labels = [{"index": i, "mid": f"/m/{i}", "name": str(i)} for i in range(4)]
write_shards(records, out, sample_rate=8000, clip_samples=2000, labels=labels, dataset="t", split="s",
             clips_per_shard=2, num_workers=0, progress=False)
"""


@pytest.mark.slow
def test_killed_conversion_leaves_no_partial_shard_and_no_manifest(
    mixed_sources: list[ClipRecord], tmp_path: Path
) -> None:
    out, marker = tmp_path / "out", tmp_path / "started"
    script = tmp_path / "convert.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    process = subprocess.Popen([sys.executable, str(script), str(mixed_sources[0].audio_path), str(out), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the conversion never reached the third shard"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert not (out / "manifest.json").exists()
    complete = sorted(out.glob("*.tar"))
    assert [p.name for p in complete] == ["shard-000000.tar", "shard-000001.tar"]
    for path in complete:
        assert len(tar_members(path)) == 4
    assert [p.name for p in out.glob("*.tmp")] in ([], ["shard-000002.tar.tmp"])


def test_nothing_usable_raises_and_writes_nothing(mixed_sources: list[ClipRecord], tmp_path: Path) -> None:
    with pytest.raises(NoUsableClipsError, match="none of 2 clips") as caught:
        convert(mixed_sources[5:], tmp_path / "out")
    assert {s.key for s in caught.value.skipped} == {"corrupt", "missing"}
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(NoUsableClipsError, match="no records"):
        convert([], tmp_path / "empty")


def test_distinct_keys_stay_distinct_duplicates_and_bad_labels_rejected(
    mixed_sources: list[ClipRecord], tmp_path: Path
) -> None:
    source = mixed_sources[0].audio_path
    records = [ClipRecord("a.b", source, (0,)), ClipRecord("a_b", source, (1,))]
    manifest = convert(records, tmp_path / "out")
    assert manifest.num_clips == 2 and manifest.skipped == []  # once both became the member 'a_b'
    with pytest.raises(DuplicateKeyError, match="two clips have the key 'a.b'"):
        convert([*records, ClipRecord("a.b", source, (2,))], tmp_path / "dup")
    with pytest.raises(ValueError, match="'bad'.*outside 0..3"):
        convert([ClipRecord("bad", source, (4,))], tmp_path / "bad")
    with pytest.raises(ValueError, match="exactly one label"):
        convert([ClipRecord("two", source, (0, 1))], tmp_path / "single", multilabel=False)
    with pytest.raises(ValueError, match="core manifest keys"):
        convert(records, tmp_path / "extra", extra_manifest={"num_clips": 3})


def test_manifest_reader_validates_and_names_the_problem(mixed_sources: list[ClipRecord], tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = convert(mixed_sources[:5], out, min_shards=2, extra_manifest={"warnings": ["w"]})
    loaded = read_manifest(out / "manifest.json")
    assert loaded.extra == {"warnings": ["w"], "resample": "sinc"} and loaded.resample_method == "sinc"
    assert loaded.label_names == ["class 0", "class 1", "class 2", "class 3"] and loaded.num_classes == 4
    assert loaded.shard_paths() == [out / s.name for s in manifest.shards]
    good = json.loads((out / "manifest.json").read_text())

    def broken(change, message: str) -> None:
        data = json.loads(json.dumps(good))
        change(data)
        (out / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(ManifestError, match=message) as caught:
            read_manifest(out)
        assert "manifest.json" in str(caught.value)

    broken(lambda d: d.pop("sample_rate"), "missing keys: sample_rate")
    broken(lambda d: d.update(format_version=2), "format_version 2")
    broken(lambda d: d.update(storage="mp3"), "storage must be one of")
    broken(lambda d: d.update(num_clips=99), "num_clips is 99 but the shards hold 5")
    broken(lambda d: d["shards"][0].update(class_counts=[1]), r"shards\[0\].class_counts must be 4")
    broken(lambda d: d.update(num_skipped=3), "num_skipped is 3")
    broken(lambda d: d["labels"][1].update(index=5), "labels")
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read JSON"):
        read_manifest(out)
    (out / "manifest.json").write_text(json.dumps(good))
    manifest.shard_paths()[1].unlink()
    with pytest.raises(ManifestError, match="missing from"):
        read_manifest(out)
    assert read_manifest(out, check_files=False).num_clips == 5
