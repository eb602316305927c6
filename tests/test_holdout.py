"""Validation held out from the training clips: the stratified split, and ``panns-prepare audioset --val-fraction``."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from panns_lightning.cli import prepare
from panns_lightning.datasets.holdout import class_counts, split_records, stratified_holdout
from panns_lightning.shardset import ClipRecord, read_manifest


def long_tailed_labels(num_clips: int = 1500, num_classes: int = 30, seed: int = 0) -> list[list[int]]:
    """Multi-label clips with Zipf-like class frequencies, plus a 1-clip and a 2-clip class at the end."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, num_classes + 1) ** 1.2
    weights /= weights.sum()
    clips = [
        sorted(set(rng.choice(num_classes, size=int(rng.integers(1, 4)), p=weights).tolist())) for _ in range(num_clips)
    ]
    clips[0] = sorted({*clips[0], num_classes})  # a class with one clip
    clips[1] = sorted({*clips[1], num_classes + 1})  # and one with two
    clips[2] = sorted({*clips[2], num_classes + 1})
    return clips


def test_split_is_stratified_disjoint_and_the_expected_size() -> None:
    labels = long_tailed_labels()
    fraction = 0.1
    split = stratified_holdout(labels, fraction, seed=0)
    assert sorted(split.train + split.val) == list(range(len(labels)))  # every clip once, none in both
    assert not set(split.train) & set(split.val)
    assert abs(len(split.val) - fraction * len(labels)) <= 0.02 * len(labels)

    total, val, train = (
        class_counts(labels, range(len(labels))),
        class_counts(labels, split.val),
        class_counts(labels, split.train),
    )
    for c, n in total.items():
        wanted = max(fraction * n, 1.0) if n >= 2 else 0.0
        assert abs(val.get(c, 0) - wanted) <= 2, (c, n, val.get(c, 0))
        assert train.get(c, 0) >= math.ceil(n / 2), (c, n, train.get(c, 0))  # training keeps most of every class
        if n >= 2:
            assert val.get(c, 0) >= 1  # every class with 2+ clips is scored by validation
    assert val.get(30, 0) == 0 and train[30] == 1  # the single clip stays in training
    assert val[31] == 1 and train[31] == 1
    head = max(total, key=total.get)
    assert abs(val[head] / total[head] - fraction) < 0.02


def test_split_is_deterministic_by_seed() -> None:
    labels = long_tailed_labels(600, 12)
    assert stratified_holdout(labels, 0.05, seed=3) == stratified_holdout(labels, 0.05, seed=3)
    assert stratified_holdout(labels, 0.05, seed=3).val != stratified_holdout(labels, 0.05, seed=4).val


def test_training_keeps_a_clip_of_every_class_even_when_co_occurrence_pulls_it_to_val() -> None:
    # Class 1 only ever co-occurs with rare class 0; whatever goes to val, training keeps class 1.
    labels = [[0, 1], [0, 1], *([[2]] * 40)]
    for seed in range(10):
        split = stratified_holdout(labels, 0.5, seed=seed)
        assert class_counts(labels, split.train).keys() >= {0, 1, 2}
        assert class_counts(labels, split.val).keys() >= {0, 1, 2}


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan"), "abc"])
def test_bad_fractions_are_refused_with_the_range(fraction: object) -> None:
    with pytest.raises(ValueError, match=r"between 0 and 1 \(exclusive\)"):
        stratified_holdout([[0], [0]], fraction, seed=0)  # type: ignore[arg-type]


def test_records_with_one_key_stay_on_one_side() -> None:
    records = [ClipRecord(f"clip{i}", f"/x/{i}.wav", (i % 3,)) for i in range(60)]
    records += [ClipRecord("clip.7", "/x/dup.wav", (0,)), ClipRecord("clip.7", "/x/dup2.wav", (1,))]
    for seed in range(5):
        train, val = split_records(records, 0.3, seed=seed)
        sides = {"val" if r in val else "train" for r in records if r.key == "clip.7"}
        assert len(sides) == 1 and len(train) + len(val) == len(records)


# --- end to end: synthetic AudioSet layout → panns-prepare audioset --val-fraction --------------------


def panns_prepare(*args: object) -> subprocess.CompletedProcess:
    script = shutil.which("panns-prepare", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "panns_lightning.cli.prepare"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=180)


def member_keys(shard_dir: Path) -> dict[str, list[int]]:
    """Every clip key in a shard set with its labels, read from the shards themselves."""
    keys: dict[str, list[int]] = {}
    for path in sorted(shard_dir.glob("shard-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    keys[member.name[: -len(".json")]] = json.loads(tar.extractfile(member).read())["labels"]
    return keys


@pytest.fixture(scope="module")
def synthetic_audioset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("holdout") / "raw"
    made = panns_prepare(
        "synthetic",
        "--out",
        data,
        "--num-classes",
        6,
        "--num-train",
        80,
        "--num-eval",
        10,
        "--clip-seconds",
        0.25,
        "--seed",
        1,
        "--quiet",
    )
    assert made.returncode == 0, made.stderr
    return data


@pytest.mark.slow
def test_console_script_writes_a_held_out_val_set_beside_the_training_set(
    synthetic_audioset: Path, tmp_path: Path
) -> None:
    data, train_dir = synthetic_audioset, tmp_path / "shards" / "full_train"
    common = [
        "--segments", data / "balanced_train_segments.csv", "--audio-dir", data / "audio", "--labels", data / "class_labels_indices.csv",
        "--sample-rate", 8000, "--clip-seconds", 0.25, "--workers", 1, "--min-shards", 2, "--quiet",
    ]  # fmt: skip
    done = panns_prepare("audioset", *common, "--out", train_dir, "--val-fraction", 0.2)
    assert done.returncode == 0, done.stderr
    val_dir = tmp_path / "shards" / "full_train_val"  # the default --val-out
    assert "held out" in done.stdout and str(val_dir) in done.stdout

    train, val = read_manifest(train_dir), read_manifest(val_dir)
    assert (train.split, val.split) == ("balanced_train", "balanced_train_val")
    assert train.labels == val.labels and (train.sample_rate, train.clip_samples, train.storage) == (
        val.sample_rate,
        val.clip_samples,
        val.storage,
    )
    assert train.num_clips + val.num_clips == 80 and abs(val.num_clips - 16) <= 3
    train_keys, val_keys = member_keys(train_dir), member_keys(val_dir)
    assert not train_keys.keys() & val_keys.keys() and len(train_keys) + len(val_keys) == 80
    for c, n in enumerate(train.class_counts):
        assert n >= val.class_counts[c] and n > 0  # training keeps most of every class
        assert val.class_counts[c] >= 1  # each class here has far more than 2 clips
    assert train.extra["holdout"]["role"] == "train" and val.extra["holdout"]["role"] == "val"
    assert train.extra["holdout"]["fraction"] == 0.2 and train.extra["holdout"]["clips"] == {
        "train": train.num_clips,
        "val": val.num_clips,
    }

    # Same seed, same split; the val dir refuses to be overwritten silently, before anything is written.
    again_dir = tmp_path / "again"
    (tmp_path / "again_val").mkdir()
    (tmp_path / "again_val" / "notes.txt").write_text("mine")
    refused = panns_prepare("audioset", *common, "--out", again_dir, "--val-fraction", 0.2)
    assert refused.returncode == 2 and "--val-out" in refused.stderr and "--overwrite" in refused.stderr
    assert not again_dir.exists()
    repeated = panns_prepare(
        "audioset", *common, "--out", again_dir, "--val-fraction", 0.2, "--val-out", tmp_path / "again_v2"
    )
    assert repeated.returncode == 0, repeated.stderr
    assert member_keys(tmp_path / "again_v2").keys() == val_keys.keys()


@pytest.mark.slow
def test_cli_rejects_bad_val_options_with_exit_2(
    synthetic_audioset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = synthetic_audioset
    base = ["audioset", "--segments", str(data / "eval_segments.csv"), "--audio-dir", str(data / "audio"),
            "--labels", str(data / "class_labels_indices.csv"), "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    for extra, message in [
        (["--val-fraction", "0"], "--val-fraction: val fraction must be between 0 and 1 (exclusive)"),
        (["--val-fraction", "1.0"], "between 0 and 1"),
        (["--val-out", str(tmp_path / "v")], "--val-out needs --val-fraction"),
        (["--val-fraction", "0.1", "--val-out", str(tmp_path / "out")], "a shard directory of their own"),
    ]:
        assert prepare.main([*base, *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_val_fraction_with_only_single_clip_classes_or_no_audio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    (tmp_path / "labels.csv").write_text('index,mid,display_name\n0,/m/a,"A"\n1,/m/b,"B"\n')
    (tmp_path / "balanced_train_segments.csv").write_text(
        '#\n#\n#\naaaaaaaaaaa, 0.000, 1.000, "/m/a"\nbbbbbbbbbbb, 0.000, 1.000, "/m/b"\n'
    )
    (tmp_path / "audio").mkdir()
    args = ["audioset", "--segments", str(tmp_path / "balanced_train_segments.csv"), "--labels", str(tmp_path / "labels.csv"),
            "--audio-dir", str(tmp_path / "audio"), "--out", str(tmp_path / "out"), "--val-fraction", "0.5", "--workers", "0", "--quiet"]  # fmt: skip
    assert prepare.main(args) == 1  # no audio at all: nothing usable, as without --val-fraction
    assert "nothing usable" in capsys.readouterr().err
    for ytid in ("aaaaaaaaaaa", "bbbbbbbbbbb"):
        sf.write(tmp_path / "audio" / f"Y{ytid}.wav", np.zeros(800, dtype=np.float32) + 0.1, 8000)
    assert prepare.main(args) == 2  # one clip per class: nothing can be held out
    assert "holds no clip" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out_val").exists()
