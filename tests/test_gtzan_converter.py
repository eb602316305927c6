"""GTZAN: both release layouts (.au and .wav with an unreadable file), stratified seeded folds, split files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.cli import prepare
from panns_lightning.datasets.gtzan import read_gtzan
from panns_lightning.shardset import read_manifest

RATE = 8000
GENRES = ("blues", "jazz", "rock")


def make_gtzan(root: Path, *, folder: str, extension: str, per_genre: int = 4) -> Path:
    rng = np.random.default_rng(1)
    for genre in GENRES:
        (root / folder / genre).mkdir(parents=True)
        for number in range(per_genre):
            path = root / folder / genre / f"{genre}.{number:05d}.{extension}"
            sf.write(path, rng.uniform(-0.3, 0.3, RATE // 2).astype(np.float32), RATE, format=extension.upper())
    return root


def test_original_au_layout_classes_counts_and_stratified_folds(tmp_path: Path) -> None:
    root = make_gtzan(tmp_path / "gtzan", folder="genres", extension="au")
    (root / "genres" / "rock" / "rock.readme.au").write_bytes(b"x")  # not a genre clip name
    folded = read_gtzan(root, num_folds=2, seed=3)
    assert [label["name"] for label in folded.labels] == ["blues", "jazz", "rock"]  # GTZAN's order
    assert len(folded.result.records) == 12 and [s.key for s in folded.result.skipped] == ["rock.readme"]
    per_fold_genre = Counter((r.meta["fold"], r.meta["genre"]) for r in folded.result.records)
    assert set(per_fold_genre.values()) == {2}  # every genre split evenly over both folds
    again = read_gtzan(root, num_folds=2, seed=3)
    assert [r.meta["fold"] for r in again.result.records] == [r.meta["fold"] for r in folded.result.records]
    other_seeds = [[r.meta["fold"] for r in read_gtzan(root, num_folds=2, seed=s).result.records] for s in range(4, 9)]
    assert any(f != [r.meta["fold"] for r in folded.result.records] for f in other_seeds)


def test_rerelease_wav_layout_reports_the_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_gtzan(tmp_path / "kaggle", folder="genres_original", extension="wav")
    (root / "genres_original" / "jazz" / "jazz.00054.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 20)
    out = tmp_path / "shards"
    code = prepare.main(
        [
            "gtzan",
            "--root",
            str(root),
            "--out",
            str(out),
            "--sample-rate",
            "8000",
            "--clip-seconds",
            "0.5",
            "--num-folds",
            "2",
            "--workers",
            "0",
            "--min-shards",
            "2",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    manifest = read_manifest(out)
    assert manifest.num_clips == 12 and manifest.multilabel is False
    assert [(s.key, s.source) for s in manifest.skipped] == [("jazz.00054", "genres_original/jazz/jazz.00054.wav")]
    folds = manifest.extra["folds"]
    assert folds["scheme"] == "stratified" and folds["seed"] == 0 and sum(folds["num_clips"].values()) == 12
    assert "jazz_00054" not in {k for keys in folds["keys"].values() for k in keys}


def test_split_file_keeps_listed_files_and_reports_missing_ones(tmp_path: Path) -> None:
    root = make_gtzan(tmp_path / "gtzan", folder="genres", extension="au")
    split = tmp_path / "filtered.txt"
    split.write_text("# fault-filtered\nblues/blues.00000.au\njazz.00001.wav\nrock.00002\nrock.00099.au\n")
    folded = read_gtzan(root, num_folds=2, split_file=split)
    assert sorted(r.key for r in folded.result.records) == ["blues.00000", "jazz.00001", "rock.00002"]
    assert [(s.key, s.source) for s in folded.result.skipped] == [("rock.00099", "filtered.txt:5")]
    assert folded.extra["excluded_by_split_file"] == 9


def test_missing_layout_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert prepare.main(["gtzan", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no GTZAN layout found" in capsys.readouterr().err
