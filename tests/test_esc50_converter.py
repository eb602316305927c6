"""ESC-50: reader on a tiny official layout, the converter CLI, fold index, and fold filtering in the DataModule."""

from __future__ import annotations

import json
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.cli import prepare
from panns_lightning.data.eval_stream import EvalClipStream
from panns_lightning.data.options import StreamOptions
from panns_lightning.data.train_stream import TrainClipStream
from panns_lightning.datasets.esc50 import read_esc50, write_synthetic_esc50
from panns_lightning.shardset import read_manifest
from panns_lightning.shardset.folds import fold_selection

RATE = 8000
CATEGORIES = {0: "dog", 1: "rooster", 2: "rain"}  # target → category, as in ESC-50's CSV


def make_esc50(root: Path) -> Path:
    """3 classes × 5 folds × 2 takes of one recording, 0.5 s at 8 kHz; one listed file missing, one bad row."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    rng = np.random.default_rng(0)
    for target, category in CATEGORIES.items():
        for fold in range(1, 6):
            source = 1000 * target + fold
            for take in "AB":
                name = f"{fold}-{source}-{take}-{target}.wav"
                sf.write(root / "audio" / name, rng.uniform(-0.3, 0.3, RATE // 2).astype(np.float32), RATE)
                rows.append(f"{name},{fold},{target},{category},{target != 1},{source}.wav,{take}")
    rows.append("5-9999-A-2.wav,5,2,rain,True,9999.wav,A")  # listed, no file
    rows.append("x-1-A-0.wav,x,0,dog,True,1.wav,A")  # fold is not a number
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def clip_jsons(shard_dir: Path) -> dict[str, dict]:
    found = {}
    for shard in sorted(shard_dir.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    found[member.name[:-5]] = json.loads(tar.extractfile(member).read())
    return found


def test_reader_names_classes_by_target_and_reports_skips(tmp_path: Path) -> None:
    folded = read_esc50(make_esc50(tmp_path / "ESC-50-master"))
    assert [label["name"] for label in folded.labels] == ["dog", "rooster", "rain"]
    assert len(folded.result.records) == 30
    reasons = sorted(skip.reason for skip in folded.result.skipped)
    assert len(reasons) == 2 and "audio file not found: audio/5-9999-A-2.wav" in reasons
    assert any("not integers" in reason for reason in reasons)
    record = next(r for r in folded.result.records if r.key == "3-1003-B-1")
    assert record.labels == (1,) and record.meta["fold"] == 3 and record.meta["src_file"] == "1003.wav"

    esc10 = read_esc50(tmp_path / "ESC-50-master", esc10=True)
    assert [label["name"] for label in esc10.labels] == ["dog", "rain"]  # re-indexed 0..1
    assert {r.labels for r in esc10.result.records} == {(0,), (1,)}


def test_reader_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="meta/esc50.csv"):
        read_esc50(tmp_path)
    root = make_esc50(tmp_path / "esc")
    (root / "meta" / "esc50.csv").write_text("filename,fold,target\n1-1-A-0.wav,1,0\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_esc50(root)


def test_cli_writes_single_label_shards_with_folds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_esc50(tmp_path / "ESC-50-master")
    out = tmp_path / "shards"
    code = prepare.main(
        [
            "esc50",
            "--root",
            str(root),
            "--out",
            str(out),
            "--sample-rate",
            "8000",
            "--clip-seconds",
            "0.5",
            "--workers",
            "0",
            "--min-shards",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    assert "5 folds (official): 1: 6, 2: 6, 3: 6, 4: 6, 5: 6" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest.multilabel is False and manifest.dataset == "esc50" and manifest.num_clips == 30
    assert manifest.num_skipped == 2 and manifest.class_counts == [10, 10, 10]
    folds = manifest.extra["folds"]
    assert folds["num_folds"] == 5 and folds["class_counts"]["2"] == [2, 2, 2]
    assert sum(sum(per.values()) for per in folds["shards"].values()) == 30
    clips = clip_jsons(out)
    assert len(clips) == 30 and all(clip["fold"] == int(key[0]) for key, clip in clips.items())
    folds_of_source = defaultdict(set)
    for clip in clips.values():
        folds_of_source[clip["src_file"]].add(clip["fold"])
    assert all(len(f) == 1 for f in folds_of_source.values())  # no recording straddles two folds
    assert {k for keys in folds["keys"].values() for k in keys} == set(clips)


def test_fold_filter_train_and_test_are_disjoint_and_cover_the_set(tmp_path: Path) -> None:
    from panns_lightning.data import AudioShardDataModule

    root = make_esc50(tmp_path / "ESC-50-master")
    out = tmp_path / "shards"
    assert (
        prepare.main(
            [
                "esc50",
                "--root",
                str(root),
                "--out",
                str(out),
                "--sample-rate",
                "8000",
                "--clip-seconds",
                "0.5",
                "--workers",
                "0",
                "--min-shards",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    everything = set(clip_jsons(out))
    fold_of = {key: clip["fold"] for key, clip in clip_jsons(out).items()}
    for fold in (1, 4):
        datamodule = AudioShardDataModule(
            str(out),
            str(out),
            str(out),
            fold=fold,
            batch_size=4,
            num_workers=0,
            balanced=False,
            steps_per_epoch=25,
            shuffle_buffer=8,
        )
        datamodule.set_rank(0, 1)
        train_spec, test_spec = datamodule._stream_spec("train"), datamodule._stream_spec("test")
        test_keys = {k for batch in datamodule.test_dataloader() for k in batch["key"]}
        train_once = {
            k for batch in EvalClipStream(train_spec, rank=0, world_size=1, batch_size=4) for k in batch["key"]
        }
        assert test_keys == {k for k, f in fold_of.items() if f == fold}
        assert train_once.isdisjoint(test_keys) and train_once | test_keys == everything
        assert train_spec.num_clips == 24 and test_spec.num_clips == 6 and sum(train_spec.class_counts) == 24
        # The endless train stream (4 passes' worth of draws) never yields a held-out clip.
        drawn = [
            k
            for batch in TrainClipStream(
                train_spec,
                rank=0,
                world_size=1,
                options=StreamOptions(batch_size=4, steps_per_epoch=25, balanced=False, shuffle_buffer=8),
                labels_only=True,
            )
            for k in batch["key"]
        ]
        assert set(drawn) == train_once


def test_fold_selection_errors_name_the_manifest() -> None:
    with pytest.raises(ValueError, match="no 'folds' index"):
        fold_selection({"labels": []}, 1, held_out=True, where="x/manifest.json")
    manifest = {"labels": [{}], "folds": {"keys": {"1": ["a"], "2": ["b"]}, "class_counts": {"1": [1], "2": [1]}}}
    with pytest.raises(ValueError, match=r"data.fold=3 but m has folds \[1, 2\]"):
        fold_selection(manifest, 3, held_out=True, where="m")
    assert fold_selection(manifest, 1, held_out=False).keys == frozenset({"b"})


def test_synthetic_esc50_layout_reads_back(tmp_path: Path) -> None:
    root = write_synthetic_esc50(tmp_path / "demo", num_classes=3, clips_per_class=10, clip_seconds=0.25)
    folded = read_esc50(root)
    assert len(folded.labels) == 3 and len(folded.result.records) == 30 and not folded.result.skipped
    assert sorted({r.meta["fold"] for r in folded.result.records}) == [1, 2, 3, 4, 5]
    assert len(read_esc50(root, esc10=True).labels) == 3  # the first 4 targets are flagged esc10
