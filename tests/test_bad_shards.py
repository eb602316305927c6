"""Damaged shard sets: every kind of damage is logged with its shard and key, counted, skipped, and
raised with ``fail_fast``; the counts reach the training logs through ``StreamEpochCallback``."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from panns_lightning.data import AudioShardDataModule, StreamEpochCallback
from panns_lightning.data.error_log import BadSampleError, NoReadableClipsError
from shard_fixtures import FixtureClip, simple_clips, truncate_file, write_shard_set

STREAM_LOG = "panns_lightning.data.error_log"  # ErrorLog logs every skipped clip and shard
NO_LABELS = json.dumps({"source": "synthetic/nolabels.wav"}).encode()


def eval_keys(datamodule: AudioShardDataModule) -> list[str]:
    return [key for batch in datamodule.val_dataloader() for key in batch["key"]]


def train_keys(datamodule: AudioShardDataModule) -> list[str]:
    batches = list(datamodule.train_dataloader())
    assert len(batches) == datamodule.steps_per_epoch, "damage must not cost the rank a step"
    return [key for batch in batches for key in batch["key"]]


def val_module(directory: Path, **options: object) -> AudioShardDataModule:
    return AudioShardDataModule(None, str(directory), batch_size=4, num_workers=0, **options)  # type: ignore[arg-type]


def train_module(directory: Path, **options: object) -> AudioShardDataModule:
    settings: dict = dict(batch_size=4, num_workers=0, steps_per_epoch=6, shuffle_buffer=8, balanced=False)
    settings.update(options)
    return AudioShardDataModule(str(directory), None, **settings)


# --------------------------------------------------------------------------- truncated tar


@pytest.fixture()
def truncated(tmp_path: Path) -> Path:
    directory = write_shard_set(tmp_path, simple_clips(30, 3), [10, 10, 10], num_classes=3)
    truncate_file(directory / "shard-000001.tar", 0.5)
    return directory


def test_truncated_tar_keeps_the_clips_before_the_cut(truncated: Path, caplog: pytest.LogCaptureFixture) -> None:
    datamodule = val_module(truncated)
    with caplog.at_level(logging.WARNING, logger=STREAM_LOG):
        keys = eval_keys(datamodule)
    kept_from_cut = sorted(key for key in keys if "clip00010" <= key <= "clip00019")
    assert 0 < len(kept_from_cut) < 10
    assert kept_from_cut == [f"clip{index:05d}" for index in range(10, 10 + len(kept_from_cut))], "a prefix"
    assert len(keys) == 20 + len(kept_from_cut) == len(set(keys))
    assert datamodule.error_counts()["val"] == {"bad_samples": 0, "bad_shards": 1}
    assert f"shard-000001.tar after clip {kept_from_cut[-1]!r}" in caplog.text and "truncated" in caplog.text
    with pytest.raises(BadSampleError, match=r"shard-000001\.tar.*truncated"):
        eval_keys(val_module(truncated, fail_fast=True))


def test_truncated_tar_does_not_stop_training(truncated: Path) -> None:
    datamodule = train_module(truncated)
    keys = train_keys(datamodule)
    after_cut = {f"clip{index:05d}" for index in range(15, 20)}  # the tar is cut at about clip 15
    assert not after_cut & set(keys)
    assert datamodule.error_counts()["train"]["bad_shards"] >= 1


# --------------------------------------------------------------------------- damaged members


@pytest.mark.parametrize("storage", ["int16", "flac"])
def test_corrupt_audio_payload_is_skipped_by_key(
    tmp_path: Path, storage: str, caplog: pytest.LogCaptureFixture
) -> None:
    extension = {"int16": "npy", "flac": "flac"}[storage]
    clips = simple_clips(12, 3)
    clips[5] = FixtureClip("corrupt", [2], override={extension: b"\x93NUMPY fLaC garbage" * 8})
    directory = write_shard_set(tmp_path, clips, [6, 6], num_classes=3, storage=storage)
    datamodule = val_module(directory)
    with caplog.at_level(logging.WARNING, logger=STREAM_LOG):
        keys = eval_keys(datamodule)
    assert sorted(keys) == sorted(clip.key for clip in clips if clip.key != "corrupt")
    assert datamodule.error_counts()["val"] == {"bad_samples": 1, "bad_shards": 0}
    assert "'corrupt' in" in caplog.text and "shard-000000.tar" in caplog.text
    with pytest.raises(BadSampleError, match=r"'corrupt' in .*shard-000000\.tar"):
        eval_keys(val_module(directory, fail_fast=True))


def test_corrupt_audio_in_training_is_reported_once_and_fail_fast_raises(tmp_path: Path) -> None:
    clips = simple_clips(12, 3)
    clips[0] = FixtureClip("corrupt", [0], override={"npy": b"not an array"})
    directory = write_shard_set(tmp_path, clips, [12], num_classes=3)
    # A balanced stream repeats clip 0's class: its copies must not be counted again.
    datamodule = train_module(directory, balanced=True, steps_per_epoch=12)
    assert "corrupt" not in train_keys(datamodule)
    assert datamodule.error_counts()["train"] == {"bad_samples": 1, "bad_shards": 0}
    with pytest.raises(BadSampleError, match=r"'corrupt' in .*shard-000000\.tar"):
        train_keys(train_module(directory, fail_fast=True, shuffle_buffer=1))


def test_member_json_without_labels_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clips = simple_clips(10, 2)
    clips[3] = FixtureClip("unlabelled", [0], override={"json": NO_LABELS})
    directory = write_shard_set(tmp_path, clips, [5, 5], num_classes=2)
    datamodule = val_module(directory)
    with caplog.at_level(logging.WARNING, logger=STREAM_LOG):
        keys = eval_keys(datamodule)
    assert "unlabelled" not in keys and len(keys) == 9
    assert datamodule.error_counts()["val"] == {"bad_samples": 1, "bad_shards": 0}
    assert "'unlabelled' in" in caplog.text and "expected {'labels'" in caplog.text
    # 8 draws stay inside pass 0; a later pass would read (and report) the clip again.
    training = train_module(directory, steps_per_epoch=2)
    assert "unlabelled" not in train_keys(training)
    assert training.error_counts()["train"]["bad_samples"] == 1
    with pytest.raises(BadSampleError, match=r"'unlabelled' in .*shard-000000\.tar"):
        eval_keys(val_module(directory, fail_fast=True))


# --------------------------------------------------------------------------- shard URLs that fail


@pytest.fixture()
def good_set(tmp_path: Path) -> Path:
    return write_shard_set(tmp_path / "good", simple_clips(12, 3), [6, 6], num_classes=3)


def test_failing_urls_are_counted_and_the_rest_is_read(
    good_set: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / "missing" / "shard-000009.tar")
    urls = [str(good_set / "shard-000000.tar"), missing, "pipe:false", str(good_set / "shard-000001.tar")]
    datamodule = val_module(good_set, val_urls=urls)
    with caplog.at_level(logging.WARNING, logger=STREAM_LOG):
        keys = eval_keys(datamodule)
    assert sorted(keys) == [f"clip{index:05d}" for index in range(12)]
    assert datamodule.error_counts()["val"] == {"bad_samples": 0, "bad_shards": 2}
    assert f"{missing} before its first clip: cannot open" in caplog.text
    assert "pipe:false before its first clip" in caplog.text
    for url in (missing, "pipe:false"):
        with pytest.raises(BadSampleError, match=url):
            eval_keys(val_module(good_set, val_urls=[url], fail_fast=True))


def test_a_pipe_that_fails_after_its_last_member_is_counted(good_set: Path) -> None:
    url = f"pipe:cat {good_set / 'shard-000000.tar'}; exit 3"
    datamodule = val_module(good_set, val_urls=[url])
    assert len(eval_keys(datamodule)) <= 6
    assert datamodule.error_counts()["val"]["bad_shards"] == 1


def test_training_reads_past_failing_urls_and_stops_when_none_is_readable(good_set: Path, tmp_path: Path) -> None:
    good = [str(good_set / "shard-000000.tar"), str(good_set / "shard-000001.tar")]
    datamodule = train_module(good_set, train_urls=[good[0], "pipe:false", good[1], str(tmp_path / "nope.tar")])
    assert len(train_keys(datamodule)) == 24
    assert datamodule.error_counts()["train"]["bad_shards"] >= 2
    broken = train_module(good_set, train_urls=["pipe:false", str(tmp_path / "nope.tar")])
    with pytest.raises(NoReadableClipsError, match="held no readable clip"):
        train_keys(broken)


# --------------------------------------------------------------------------- counts in the training logs


class WaveformMean(pl.LightningModule):
    """A linear model on each clip's mean sample: trains on the batch dict in milliseconds."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, num_classes)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        logits = self.layer(batch["waveform"].mean(dim=1, keepdim=True))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["target"])

    def validation_step(self, batch: dict, batch_index: int) -> None:
        self.layer(batch["waveform"].mean(dim=1, keepdim=True))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_callback_logs_bad_sample_and_shard_counts(tmp_path: Path) -> None:
    # Train: the first clip of each shard is damaged, so each worker meets one whatever shard it reads.
    clips = simple_clips(12, 3)
    clips[0] = FixtureClip("unlabelled", [0], override={"json": NO_LABELS})
    clips[6] = FixtureClip("corrupt", [1], override={"npy": b"not an array"})
    train = write_shard_set(tmp_path / "train", clips, [6, 6], num_classes=3)
    val = write_shard_set(tmp_path / "val", simple_clips(20, 3, "va"), [10, 10], num_classes=3, split="val")
    truncate_file(val / "shard-000001.tar", 0.5)
    datamodule = AudioShardDataModule(
        str(train),
        str(val),
        val_urls=[str(val / "shard-000000.tar"), str(val / "shard-000001.tar"), "pipe:false"],
        batch_size=2,
        num_workers=2,
        steps_per_epoch=4,
        shuffle_buffer=16,
        balanced=False,
    )
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="logs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[StreamEpochCallback()],
        default_root_dir=tmp_path,
    )
    trainer.fit(WaveformMean(3), datamodule=datamodule)
    assert datamodule.error_counts() == {
        "train": {"bad_samples": 2, "bad_shards": 0},
        "val": {"bad_samples": 0, "bad_shards": 2},
        "test": {"bad_samples": 0, "bad_shards": 0},
    }, "counted in the DataLoader workers, read in the main process"
    assert trainer.callback_metrics["data/bad_samples"].item() == 2
    assert trainer.callback_metrics["data/bad_shards"].item() == 2
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("data/bad_samples")]
    assert [(float(row["data/bad_samples"]), float(row["data/bad_shards"])) for row in rows] == [(2.0, 2.0)]
