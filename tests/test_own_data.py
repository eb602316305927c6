"""Your own data: panns-prepare folder / csv, folds or splits in one shard set, the task from the manifest.

The slow tests run the "Your own data" walk-through (docs/guides/own-data.md) (folder → shards → fine-tune a
PANNs-format checkpoint → panns-tag / panns-export with the folder's class names) and a
multi-label CSV set fine-tuned for a few steps (BCE, scored by mAP), on tiny generated audio.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from panns_lightning.cli import prepare
from panns_lightning.datasets.custom import partition, read_folder, write_custom_shards
from panns_lightning.datasets.custom_csv import read_csv_table
from panns_lightning.shardset import read_manifest
from panns_lightning.shardset.splits import split_selection
from panns_lightning.shardset.writer import ClipTask, convert_clip
from panns_lightning.training.cv_report import fold_result, format_cv_table, summarize

RATE = 16000
TONES = {"dog": 300.0, "rain": 1200.0, "siren": 2500.0, "wind": 4000.0}
# The tiny model of the walk-through: Cnn6 with 32 mel bins at 16 kHz.
MODEL = dict(name="Cnn6", sample_rate=RATE, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)
MODEL_OVERRIDES = [f"model={MODEL['name']}", *(f"model.{k}={v}" for k, v in MODEL.items() if k != "name")]
TINY_RUN = [
    "trainer=cpu",
    "logger=none",
    "trainer.max_steps=3",
    "trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
    "data.batch_size=6",
    "data.num_workers=0",
    "data.steps_per_epoch=3",
    "data.shuffle_buffer=32",
    "augment.specaugment.time_drop_width=8",
]


def tone(labels: list[str], seconds: float = 1.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (sum(0.3 * np.sin(2 * np.pi * TONES[name] * t) for name in labels) + noise).astype(np.float32)


def make_folder(root: Path, classes: tuple[str, ...] = ("dog", "rain", "siren"), per_class: int = 6) -> Path:
    """``root/<class>/[take_k/]<class>N.wav``: nested at any depth, plus things that are not clips."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            folder = root / name / (f"take_{i % 2}" if i % 3 else "")
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / f"{name}{i}.wav", tone([name], seed=10 * c + i), RATE)
    (root / classes[0] / "notes.txt").write_text("not audio")
    return root


def make_multilabel_csv(root: Path, clips: int = 24) -> Path:
    """A CSV of FLAC files with 1-2 labels per clip ("dog,siren" in one quoted cell) and a few crops."""
    combos = [["dog", "siren"], ["rain"], ["wind", "rain"], ["dog"], ["siren"], ["wind"]]
    (root / "audio").mkdir(parents=True)
    rows = ["file,labels,start,end"]
    for i in range(clips):
        labels = combos[i % len(combos)]
        sf.write(root / "audio" / f"clip{i:02d}.flac", tone(labels, seconds=2.0, seed=i), RATE)
        crop = ("0.5", "1.5") if i % 4 == 0 else ("", "")
        rows.append(f'audio/clip{i:02d}.flac,"{",".join(labels)}",{crop[0]},{crop[1]}')
    (root / "tags.csv").write_text("\n".join(rows) + "\n")
    return root / "tags.csv"


def convert(*args: object) -> int:
    return prepare.main([str(a) for a in args] + ["--sample-rate", str(RATE), "--clip-seconds", "1", "--quiet"])


# ---------------------------------------------------------------------------------------------
# readers


def test_folder_reader_finds_nested_clips_and_reports_strays(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "sounds", per_class=3)
    sf.write(root / "loose.wav", tone(["dog"]), RATE)
    dataset = read_folder(root)
    assert [label["name"] for label in dataset.labels] == ["dog", "rain", "siren"]
    assert len(dataset.result.records) == 9 and not dataset.multilabel and dataset.partition is None
    keys = {record.key: record.labels for record in dataset.result.records}
    assert keys["rain/take_1/rain1.wav"] == (1,) and keys["siren/siren0.wav"] == (2,)
    assert [(s.source, s.reason) for s in dataset.result.skipped] == [("loose.wav", "not inside a class folder")]
    assert "dog/notes.txt" in dataset.result.warnings[0]


def test_folder_with_split_folders_keeps_them(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("Validation", 1), ("test", 1)):
        make_folder(tmp_path / split, classes=("dog", "rain"), per_class=count)
    dataset = partition(read_folder(tmp_path))
    splits = sorted((r.meta["split"], r.labels[0]) for r in dataset.result.records)
    assert splits.count(("val", 0)) == 1 and splits.count(("train", 1)) == 3 and splits.count(("test", 1)) == 1
    assert dataset.held_out == {}  # the folders give all three splits: nothing is held out
    with pytest.raises(ValueError, match="has a val split of its own"):
        partition(read_folder(tmp_path), val_fraction=0.2)


def test_csv_reader_multilabel_segments_and_missing_files(tmp_path: Path) -> None:
    csv_path = make_multilabel_csv(tmp_path, clips=6)
    with csv_path.open("a") as handle:
        handle.write("audio/gone.flac,dog,,\naudio/clip01.flac,rain,,\n")
    dataset = read_csv_table(csv_path)
    assert dataset.multilabel and [label["name"] for label in dataset.labels] == ["dog", "rain", "siren", "wind"]
    first = dataset.result.records[0]
    assert first.labels == (0, 2) and first.segment == (0.5, 1.5) and first.key == "audio/clip00.flac@0.5-1.5s"
    assert first.meta == {"start": 0.5, "end": 1.5} and first.source == "audio/clip00.flac"
    assert [(s.source, s.reason.split(":")[0]) for s in dataset.result.skipped] == [
        ("tags.csv:8", "audio file not found"),
        ("tags.csv:9", "duplicate of line 3 (same file and segment)"),
    ]


def test_csv_bad_rows_are_errors_naming_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    bad = tmp_path / "bad.csv"
    bad.write_text("filename;label;split;start;end\na.wav;dog;tets;;\na.wav;;train;;\na.wav;dog;train;2;1\n")
    with pytest.raises(ValueError) as error:
        read_csv_table(bad)
    message = str(error.value)
    assert "bad.csv: 3 bad value(s)" in message
    assert "line 2, column 'split': 'tets' is not a split" in message
    assert "line 3, column 'label': no label" in message
    assert "line 4, columns 'start'/'end': end 1 s is not after start 2 s" in message
    (tmp_path / "folds.csv").write_text("file,label,fold\na.wav,dog,0\n")
    with pytest.raises(ValueError, match=r"line 2, column 'fold': '0' is not a fold number"):
        read_csv_table(tmp_path / "folds.csv")
    (tmp_path / "cols.csv").write_text("name,label\na.wav,dog\n")
    with pytest.raises(ValueError, match="no file column.*pass --file-column"):
        read_csv_table(tmp_path / "cols.csv")
    assert read_csv_table(tmp_path / "cols.csv", file_column="name").result.records[0].labels == (0,)


def test_partition_holds_out_stratified_splits_or_draws_folds(tmp_path: Path) -> None:
    dataset = read_csv_table(make_multilabel_csv(tmp_path, clips=24))
    split = partition(dataset, seed=3)
    sides = {name: [r for r in split.result.records if r.meta["split"] == name] for name in ("train", "val", "test")}
    assert sum(map(len, sides.values())) == 24 and split.held_out["val"]["fraction"] == 0.1
    for name in ("val", "test"):  # every class with >= 2 clips gets one held-out clip at least
        assert {label for r in sides[name] for label in r.labels} == {0, 1, 2, 3}
    again = partition(dataset, seed=3)
    assert [r.meta for r in again.result.records] == [r.meta for r in split.result.records]
    folded = partition(dataset, num_folds=3)
    assert sorted({r.meta["fold"] for r in folded.result.records}) == [1, 2, 3] and folded.seed == 0
    with pytest.raises(ValueError, match="do not apply"):
        partition(folded, val_fraction=0.2)
    with pytest.raises(ValueError, match="must be below 1"):
        partition(dataset, val_fraction=0.5, test_fraction=0.5)


def test_a_segment_is_cropped_then_padded(tmp_path: Path) -> None:
    signal = np.zeros(2 * RATE, dtype=np.float32)
    signal[RATE:] = tone(["dog"])  # silence, then a tone from 1 s
    sf.write(tmp_path / "x.wav", signal, RATE)
    done = convert_clip(
        ClipTask(0, str(tmp_path / "x.wav"), RATE, RATE, "int16", 0.0, "sinc", start_seconds=1.0, end_seconds=1.5)
    )
    audio = np.load(io.BytesIO(done.payload))
    assert audio.shape == (RATE,) and np.abs(audio[:2000]).max() > 5000  # the tone (0.3 x 32767) from 0 s
    assert not audio[RATE // 2 + 10 :].any()  # 0.5 s of it, then padding
    late = convert_clip(
        ClipTask(0, str(tmp_path / "x.wav"), RATE, RATE, "int16", 0.0, "sinc", start_seconds=5.0, end_seconds=6.0)
    )
    assert late.payload is None and "past the end of the audio (2.00 s)" in late.error


# ---------------------------------------------------------------------------------------------
# conversion: manifest, splits index, selection


def test_conversion_records_task_and_splits_and_the_datamodule_selects_them(tmp_path: Path) -> None:
    from panns_lightning.data import AudioShardDataModule

    dataset = partition(read_csv_table(make_multilabel_csv(tmp_path, clips=12)), val_fraction=0.2, test_fraction=0.2)
    manifest = write_custom_shards(
        dataset, tmp_path / "shards", sample_rate=8000, clip_samples=4000, num_workers=0, progress=False, min_shards=2
    )
    manifest = read_manifest(tmp_path / "shards")
    assert manifest.multilabel and manifest.dataset == "tags" and manifest.extra["source_layout"]["layout"] == "csv"
    index = manifest.extra["splits"]
    assert sum(index["num_clips"].values()) == manifest.num_clips == 12 and index["held_out"]["test"]["from"] == "all"
    val = split_selection(manifest, "val")
    assert val.num_clips == index["num_clips"]["val"] and val.keys == frozenset(index["keys"]["val"])
    shards = str(tmp_path / "shards")
    auto = AudioShardDataModule(shards, shards, shards, batch_size=2, num_workers=0)
    assert auto.check_selection() == index["num_clips"]  # splits are used whenever the manifest has them
    whole = AudioShardDataModule(shards, shards, shards, batch_size=2, num_workers=0, use_splits=False)
    assert whole.check_selection() == {"train": 12, "val": 12, "test": 12}
    with pytest.raises(ValueError, match="has no 'folds' index"):
        AudioShardDataModule(shards, fold=1, batch_size=2).check_selection()
    only_train = partition(read_csv_table(tmp_path / "tags.csv"), val_fraction=0, test_fraction=0)
    write_custom_shards(only_train, tmp_path / "t", sample_rate=8000, clip_samples=4000, num_workers=0, progress=False)
    with pytest.raises(ValueError, match="has no 'val' split.*data.val_dir=null"):
        AudioShardDataModule(str(tmp_path / "t"), str(tmp_path / "t"), batch_size=2).check_selection()


def test_prepare_cli_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path = make_multilabel_csv(tmp_path, clips=3)
    csv_path.write_text(csv_path.read_text().replace("file,labels,start,end", "file,labels,split,end"))
    assert convert("csv", "--csv", csv_path, "--out", tmp_path / "o", "--workers", "0") == 2
    assert "line 3, column 'split': '' is not a split" in capsys.readouterr().err
    folds = tmp_path / "f.csv"
    folds.write_text("file,label,fold\naudio/clip00.flac,dog,1\naudio/clip01.flac,rain,2\n")
    assert convert("csv", "--csv", folds, "--out", tmp_path / "o", "--num-folds", "3", "--workers", "0") == 2
    assert "has folds of its own" in capsys.readouterr().err
    assert convert("folder", "--root", tmp_path / "nothing", "--out", tmp_path / "o") == 2
    assert "is not a directory" in capsys.readouterr().err


def test_cv_report_scores_multilabel_folds_by_map(tmp_path: Path) -> None:
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    results = []
    for fold, probs in ((1, targets * 0.8 + 0.1), (2, 0.9 - targets * 0.8)):  # right, then inverted
        result = fold_result(fold=fold, label_names=["a", "b", "c"], probs=probs, targets=targets, multilabel=True)
        results.append((tmp_path / f"{fold}.json", result))
    assert results[0][1]["mAP"] == pytest.approx(1.0) and results[1][1]["mAP"] < 1.0
    summary = summarize(results)
    assert summary["multilabel"] and summary["mAP_mean"] == pytest.approx((1.0 + results[1][1]["mAP"]) / 2)
    assert "(mAP), accuracy" in format_cv_table(summary).splitlines()[-1]


# ---------------------------------------------------------------------------------------------
# the walk-through (slow: a fine-tuning run, panns-tag, panns-export)


def finetune_app(*overrides: str) -> dict:
    """What ``panns-finetune OVERRIDES`` runs, composed and run in this process."""
    from hydra import compose, initialize_config_dir

    from panns_lightning.cli.finetune import finetune
    from panns_lightning.cli.hydra_app import find_config_dir

    with initialize_config_dir(config_dir=find_config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return finetune(cfg)


@pytest.fixture()
def panns_checkpoint(tmp_path: Path) -> Path:
    """The "published PANNs checkpoint" of the walk-through: upstream's format, {"model": state_dict}."""
    from panns_lightning.models import build_model, save_panns_checkpoint

    torch.manual_seed(0)
    model = build_model(**{k: v for k, v in MODEL.items() if k != "name"}, name=MODEL["name"], classes_num=527)
    return save_panns_checkpoint(model, tmp_path / "Cnn6_mel32_16k.pth")


@pytest.mark.slow
def test_walkthrough_folder_to_finetuned_tagger(
    tmp_path: Path, panns_checkpoint: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from panns_lightning.cli import export, tag

    sounds = make_folder(tmp_path / "my_sounds")
    shards = tmp_path / "data" / "my_sounds" / "shards"
    assert convert("folder", "--root", sounds, "--out", shards, "--workers", "0", "--min-shards", "2") == 0
    assert "splits: train 12, val 3, test 3" in capsys.readouterr().out
    run_dir = tmp_path / "run"
    # panns-finetune experiment=finetune_custom data.train_dir=... finetune.checkpoint=... (+ a tiny model and run),
    # composed and run in this process (test_finetune_cv.py runs the console entry point itself).
    with caplog.at_level(logging.INFO, logger="panns_lightning.finetune"):
        finetune_app(
            "experiment=finetune_custom",
            f"data.train_dir={shards}",
            f"finetune.checkpoint={panns_checkpoint}",
            *MODEL_OVERRIDES,
            *TINY_RUN,
            f"paths.root_dir={tmp_path}",
            f"paths.output_dir={run_dir}",
        )
    assert "single-label task (cross-entropy, accuracy)" in caplog.text
    capsys.readouterr()  # the run's own output
    result = json.loads((run_dir / "fold_result.json").read_text())
    assert result["fold"] is None and result["test_split"] == "test" and result["num_clips"] == 3
    assert result["labels"] == ["dog", "rain", "siren"] and result["tested_weights"].endswith("best.ckpt")
    best = run_dir / "checkpoints" / "best.ckpt"
    hyper = torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hyper["multilabel"] is False  # cross-entropy, from the manifest

    assert tag.main([str(sounds / "siren" / "siren0.wav"), "--checkpoint", str(best), "--json", "--top-k", "3"]) == 0
    tagged = json.loads(capsys.readouterr().out)
    assert sorted(entry["label"] for entry in tagged["results"][0]["top"]) == ["dog", "rain", "siren"]
    # a single-label model's scores are its softmax: they sum to 1 over the classes (one window)
    assert sum(entry["probability"] for entry in tagged["results"][0]["top"]) == pytest.approx(1.0, abs=1e-5)
    exported = tmp_path / "model.pt"
    assert export.main([str(best), "--format", "torchscript", "--out", str(exported)]) == 0
    assert json.loads(Path(f"{exported}.json").read_text())["labels"] == ["dog", "rain", "siren"]


@pytest.mark.slow
def test_multilabel_csv_finetunes_with_bce_and_reports_map(tmp_path: Path, panns_checkpoint: Path) -> None:
    shards = tmp_path / "shards"
    csv_path = make_multilabel_csv(tmp_path / "raw")
    assert convert("csv", "--csv", csv_path, "--out", shards, "--workers", "0", "--min-shards", "2") == 0
    assert read_manifest(shards).multilabel
    results = finetune_app(
        "experiment=finetune_custom",
        f"data.train_dir={shards}",
        f"finetune.checkpoint={panns_checkpoint}",
        *MODEL_OVERRIDES,
        *TINY_RUN,
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
    )
    assert results["score"] == results["test/mAP"] and 0.0 <= results["test/mAP"] <= 1.0
    result = json.loads((tmp_path / "run" / "fold_result.json").read_text())
    assert result["multilabel"] and result["mAP"] == pytest.approx(results["test/mAP"], abs=1e-5)
    assert result["labels"] == ["dog", "rain", "siren", "wind"]
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["hyper_parameters"]["multilabel"] is True  # BCE
    assert "val/mAP" in str(best["callbacks"])  # monitor=auto chose the multi-label score
