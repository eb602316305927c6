"""RAVDESS: file-name decoding, channels (song has 6 emotions), folds by actor with no speaker in two folds."""

from __future__ import annotations

import json
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from panns_lightning.cli import prepare
from panns_lightning.datasets.ravdess import EMOTIONS, actor_fold, read_ravdess
from panns_lightning.shardset import read_manifest

RATE = 8000


def make_ravdess(root: Path, actors: range = range(1, 9)) -> Path:
    """Per actor: speech emotions 1..8 and song emotions 1..6 (statement 1, repetition 1), plus odd files."""
    rng = np.random.default_rng(2)
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        names = [f"03-01-{e:02d}-01-01-01-{actor:02d}" for e in range(1, 9)] + [
            f"03-02-{e:02d}-02-01-01-{actor:02d}" for e in range(1, 7)
        ]
        for name in names:
            sf.write(folder / f"{name}.wav", rng.uniform(-0.3, 0.3, RATE // 4).astype(np.float32), RATE)
    sf.write(root / "Actor_01" / "02-01-01-01-01-01-01.wav", np.zeros(100, np.float32), RATE)  # video-only
    sf.write(root / "Actor_01" / "03-01-01-01-01-02-02.wav", np.zeros(100, np.float32), RATE)  # actor 02 in Actor_01
    sf.write(root / "Actor_02" / "03-02-07-01-01-01-02.wav", np.zeros(100, np.float32), RATE)  # song "disgust"
    return root


def test_speech_song_and_both_channels(tmp_path: Path) -> None:
    root = make_ravdess(tmp_path / "ravdess")
    speech = read_ravdess(root, channel="speech")
    assert [label["name"] for label in speech.labels] == list(EMOTIONS) and len(speech.result.records) == 64
    reasons = {s.key: s.reason for s in speech.result.skipped}
    assert "video-only" in reasons["02-01-01-01-01-01-01"] and "Actor_01" in reasons["03-01-01-01-01-02-02"]
    song = read_ravdess(root, channel="song")
    assert [label["name"] for label in song.labels] == list(EMOTIONS[:6]) and len(song.result.records) == 48
    assert "does not occur in RAVDESS song" in {s.key: s.reason for s in song.result.skipped}["03-02-07-01-01-01-02"]
    both = read_ravdess(root, channel="both")
    assert len(both.labels) == 8 and len(both.result.records) == 112
    record = next(r for r in both.result.records if r.key == "03-02-04-02-01-01-07")
    assert record.labels == (3,)
    assert {k: record.meta[k] for k in ("vocal_channel", "emotion", "intensity", "actor", "gender", "fold")} == {
        "vocal_channel": "song",
        "emotion": "sad",
        "intensity": "strong",
        "actor": 7,
        "gender": "male",
        "fold": 4,
    }


def test_actor_folds_pair_a_male_and_a_female_actor() -> None:
    assert [actor_fold(a, 4) for a in range(1, 25)] == [1, 1, 2, 2, 3, 3, 4, 4] * 3
    assert [actor_fold(a, 6) for a in (1, 2, 13, 14)] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="num_folds"):
        read_ravdess(".", num_folds=13)


def test_converted_folds_never_share_an_actor(tmp_path: Path) -> None:
    root = make_ravdess(tmp_path / "ravdess")
    out = tmp_path / "shards"
    assert (
        prepare.main(
            [
                "ravdess",
                "--root",
                str(root),
                "--out",
                str(out),
                "--channel",
                "both",
                "--sample-rate",
                "8000",
                "--clip-seconds",
                "0.25",
                "--workers",
                "0",
                "--min-shards",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    manifest = read_manifest(out)
    assert manifest.num_clips == 112 and manifest.num_skipped == 3 and manifest.extra["channel"] == "both"
    folds_of_actor = defaultdict(set)
    for shard in out.glob("shard-*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    clip = json.loads(tar.extractfile(member).read())
                    folds_of_actor[clip["actor"]].add(clip["fold"])
    assert {a: f for a, f in folds_of_actor.items()} == {a: {actor_fold(a, 4)} for a in range(1, 9)}
    assert manifest.extra["folds"]["num_clips"] == {"1": 28, "2": 28, "3": 28, "4": 28}


def test_no_actor_folders_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert prepare.main(["ravdess", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no Actor_NN folders" in capsys.readouterr().err
