"""``panns-prepare``: synthetic → audioset through the installed console script, exit codes, inspect."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from panns_lightning.cli import prepare
from panns_lightning.shardset import read_manifest


def panns_prepare(*args: str) -> subprocess.CompletedProcess:
    script = shutil.which("panns-prepare", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "panns_lightning.cli.prepare"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_synthetic_then_audioset_through_the_console_script(tmp_path: Path) -> None:
    data, shards = tmp_path / "data", tmp_path / "shards"
    made = panns_prepare(
        "synthetic",
        "--out",
        data,
        "--num-classes",
        5,
        "--num-train",
        30,
        "--num-eval",
        20,
        "--clip-seconds",
        0.5,
        "--seed",
        3,
        "--quiet",
    )
    assert made.returncode == 0, made.stderr
    assert "wrote 50 clips" in made.stdout and "panns-prepare audioset --segments" in made.stdout

    # one clip goes missing and one gets corrupted, as in any real AudioSet download
    audio_files = sorted((data / "audio" / "balanced_train").iterdir())
    audio_files[0].unlink()
    audio_files[1].write_bytes(b"not audio at all" * 50)
    common = [
        "--audio-dir",
        data / "audio",
        "--labels",
        data / "class_labels_indices.csv",
        "--sample-rate",
        8000,
        "--clip-seconds",
        0.5,
        "--workers",
        1,
        "--quiet",
    ]
    converted = panns_prepare(
        "audioset",
        "--segments",
        data / "balanced_train_segments.csv",
        "--out",
        shards,
        "--clips-per-shard",
        10,
        "--min-shards",
        1,
        *common,
    )
    assert converted.returncode == 0, converted.stderr
    assert "wrote 28 clips in 3 shards" in converted.stdout
    assert (
        "skipped 2 clips" in converted.stdout
        and "audio file not found" in converted.stdout
        and "cannot decode" in converted.stdout
    )

    manifest = read_manifest(shards)
    assert (manifest.dataset, manifest.split, manifest.sample_rate, manifest.clip_samples) == (
        "audioset",
        "balanced_train",
        8000,
        4000,
    )
    assert manifest.num_skipped == 2 and manifest.created_by.startswith("panns-prepare audioset")
    assert [entry["mid"] for entry in manifest.labels][:2] == ["/synth/tone_500", "/synth/chirp_up"]

    again = panns_prepare("audioset", "--segments", data / "balanced_train_segments.csv", "--out", shards, *common)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    flac = panns_prepare(
        "audioset",
        "--segments",
        data / "eval_segments.csv",
        "--out",
        shards,
        "--storage",
        "flac",
        "--overwrite",
        *common,
    )
    assert flac.returncode == 0, flac.stderr
    assert json.loads((shards / "manifest.json").read_text())["storage"] == "flac"
    assert read_manifest(shards).split == "eval" and len(read_manifest(shards).shards) == 8  # --min-shards default


def test_exit_codes_for_usage_errors_and_nothing_usable(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text('index,mid,display_name\n0,/m/a,"A"\n')
    segments = tmp_path / "eval_segments.csv"
    segments.write_text('#\n#\n#\nabcdefghijk, 0.000, 10.000, "/m/a"\n')
    (tmp_path / "audio").mkdir()
    args = [
        "audioset",
        "--segments",
        str(segments),
        "--labels",
        str(labels),
        "--audio-dir",
        str(tmp_path / "audio"),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    assert prepare.main(args) == 1  # the only clip has no audio
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert prepare.main([*args[:2], str(tmp_path / "nope.csv"), *args[3:]]) == 2
    with pytest.raises(SystemExit) as caught:
        prepare.main(["audioset", "--segments", str(segments)])
    assert caught.value.code == 2
    assert prepare.main(["synthetic", "--out", str(tmp_path), "--quiet"]) == 2  # not empty


def test_inspect_delegates_to_the_data_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("panns_lightning.data.diagnostics.inspect")
    fake.run_inspect = lambda shard_dir, **options: calls.append((shard_dir, options)) or 0
    monkeypatch.setitem(sys.modules, "panns_lightning.data.diagnostics.inspect", fake)
    assert (
        prepare.main(["inspect", str(tmp_path), "--balanced", "--draws", "50", "--seed", "4", "--batch-size", "8"]) == 0
    )
    assert calls == [(tmp_path, {"balanced": True, "draws": 50, "seed": 4, "batch_size": 8, "plot": None})]
